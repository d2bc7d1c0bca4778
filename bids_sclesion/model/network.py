"""The segmentation network (a MONAI residual U-Net) and its configuration."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from monai.networks.nets import UNet

#: Output channels (region-based, sigmoid): 0 = cord (lesions included), 1 = lesion.
OUTPUT_CHANNELS = ("cord", "lesion")


@dataclass
class NetworkConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    dropout: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        known = {k: d[k] for k in ("channels", "strides", "num_res_units", "dropout") if k in d}
        for key in ("channels", "strides"):
            if key in known:
                known[key] = tuple(int(v) for v in known[key])
        cfg = cls(**known)
        if len(cfg.strides) != len(cfg.channels) - 1:
            raise ValueError(f"network config: {len(cfg.channels)} channels need {len(cfg.channels) - 1} strides")
        return cfg

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["strides"] = list(self.channels), list(self.strides)
        return d

    @property
    def size_divisor(self) -> int:
        out = 1
        for s in self.strides:
            out *= s
        return out


def build_network(config: NetworkConfig | None = None) -> torch.nn.Module:
    config = config or NetworkConfig()
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=len(OUTPUT_CHANNELS),
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        dropout=config.dropout,
        norm="instance",
    )


def init_output_bias(network: torch.nn.Module, logits: tuple[float, ...] = (-2.0, -4.0)) -> None:
    """Start each output at a low prior probability (sigmoid(-4) ~ 2 %).

    Lesions fill a tiny fraction of the image: starting at p = 0.5 everywhere
    makes the first thousand iterations predict lesion in the whole cord.
    """
    last = [m for m in network.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))
            and m.out_channels == len(logits) and m.bias is not None]
    if last:
        with torch.no_grad():
            last[-1].bias.copy_(torch.tensor(logits, dtype=last[-1].bias.dtype))
