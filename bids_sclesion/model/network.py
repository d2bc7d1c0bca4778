"""The segmentation network (a MONAI residual U-Net) and its configuration."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from monai.networks.nets import UNet

#: Output channels (region-based, sigmoid): 0 = cord (lesions included), 1 = lesion.
OUTPUT_CHANNELS = ("cord", "lesion")
#: Optional third output, trained where grey matter labels exist: teaches the network the
#: tissue it most often takes for lesion. The app reads the first two outputs only.
GREY_MATTER = "grey_matter"


@dataclass
class NetworkConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    dropout: float = 0.0
    out_channels: int = len(OUTPUT_CHANNELS)

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        known = {k: d[k] for k in ("channels", "strides", "num_res_units", "dropout", "out_channels") if k in d}
        for key in ("channels", "strides"):
            if key in known:
                known[key] = tuple(int(v) for v in known[key])
        cfg = cls(**known)
        if len(cfg.strides) != len(cfg.channels) - 1:
            raise ValueError(f"network config: {len(cfg.channels)} channels need {len(cfg.channels) - 1} strides")
        if cfg.out_channels < len(OUTPUT_CHANNELS):
            raise ValueError(f"network config: out_channels must be at least {len(OUTPUT_CHANNELS)} (cord, lesion)")
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
        out_channels=config.out_channels,
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


def load_pretrained(network: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``network``, which may have more output channels than the pretrained one.

    Tensors of matching shape are copied. Where the new network is wider (its
    extra outputs), the pretrained block is copied into the leading slice and
    the weights that would feed new channels into old outputs are zeroed, so
    the pretrained outputs are unchanged and the new ones start from scratch.
    """
    own = network.state_dict()
    if set(own) != set(state):
        raise ValueError(f"pretrained weights do not match the architecture ({len(set(own) ^ set(state))} keys differ)")
    with torch.no_grad():
        for key, target in own.items():
            source = state[key]
            if source.shape == target.shape:
                target.copy_(source)
                continue
            if source.dim() != target.dim() or any(a > b for a, b in zip(source.shape, target.shape)):
                raise ValueError(f"pretrained weight {key}: shape {tuple(source.shape)} does not fit {tuple(target.shape)}")
            target[tuple(slice(0, n) for n in source.shape)] = source
            if source.dim() >= 2 and source.shape[0] < target.shape[0] and source.shape[1] < target.shape[1]:
                target[: source.shape[0], source.shape[1]:] = 0  # a (out, in) convolution: old outputs ignore new inputs
    network.load_state_dict(own)
