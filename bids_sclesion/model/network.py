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
#: Input channels: the image, then (optionally) where grey and white matter are expected
#: (:mod:`bids_sclesion.core.tissue_prior`, stage 2 only).
IMAGE_INPUT = "image"
TISSUE_PRIOR_INPUTS = ("grey_matter_prior", "white_matter_prior")


@dataclass
class NetworkConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    dropout: float = 0.0
    out_channels: int = len(OUTPUT_CHANNELS)
    in_channels: int = 1

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        known = {k: d[k] for k in ("channels", "strides", "num_res_units", "dropout", "out_channels", "in_channels")
                 if k in d}
        for key in ("channels", "strides"):
            if key in known:
                known[key] = tuple(int(v) for v in known[key])
        cfg = cls(**known)
        if len(cfg.strides) != len(cfg.channels) - 1:
            raise ValueError(f"network config: {len(cfg.channels)} channels need {len(cfg.channels) - 1} strides")
        if cfg.out_channels < len(OUTPUT_CHANNELS):
            raise ValueError(f"network config: out_channels must be at least {len(OUTPUT_CHANNELS)} (cord, lesion)")
        if cfg.in_channels not in (1, 1 + len(TISSUE_PRIOR_INPUTS)):
            raise ValueError(f"network config: in_channels must be 1 (image) or {1 + len(TISSUE_PRIOR_INPUTS)} "
                             "(image and tissue prior)")
        return cfg

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["strides"] = list(self.channels), list(self.strides)
        if self.in_channels == 1:
            del d["in_channels"]  # the models made before tissue priors say nothing of their one input
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
        in_channels=config.in_channels,
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


def _concatenated_inputs(network: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """For each up-sampling convolution of a MONAI UNet, the channels of the tensors its input joins.

    Each level is ``Sequential(down, SkipConnection(deeper levels), up)``; the skip
    connection concatenates the down block's output with the deeper levels' output,
    and that concatenation is the input of the up block's first (transposed) convolution.
    """
    joined = {}
    for name, module in network.named_modules():
        children = list(module.children()) if isinstance(module, torch.nn.Sequential) else []
        if len(children) != 3 or type(children[1]).__name__ != "SkipConnection":
            continue
        up_name, up = next((n, m) for n, m in children[2].named_modules() if isinstance(m, torch.nn.ConvTranspose3d))
        down = children[0].out_channels
        joined[f"{name}.2.{up_name}".lstrip(".")] = (down, up.in_channels - down)
    return joined


def _old_channels_in_new(old: tuple[int, ...], new: tuple[int, ...]) -> torch.Tensor:
    """Where the channels of a tensor joined from parts of sizes ``old`` sit once the parts have sizes ``new``."""
    starts = [sum(new[:i]) for i in range(len(new))]
    return torch.cat([torch.arange(n) + start for n, start in zip(old, starts)])


def load_pretrained(network: torch.nn.Module, state: dict[str, torch.Tensor],
                    pretrained: torch.nn.Module | None = None) -> None:
    """Load ``state`` into ``network``, which may be wider than the network it came from.

    Wider means more channels at any level (``NetworkConfig.channels``) and/or more
    outputs. Every pretrained weight is copied to the channels that play its part in
    the wider network (the leading channels of each tensor, of each part where the
    skip connections join two tensors), and the weights that would feed new channels
    into pretrained ones are zeroed: the wider network computes exactly what the
    pretrained one did, and its new channels, started at random, add capacity from there.
    ``pretrained`` (the network ``state`` came from) is needed only when hidden
    channels differ, to know how the joined tensors were split.
    """
    own = network.state_dict()
    if set(own) != set(state):
        raise ValueError(f"pretrained weights do not match the architecture ({len(set(own) ^ set(state))} keys differ)")
    modules = dict(network.named_modules())
    new_joins = _concatenated_inputs(network)
    old_joins = _concatenated_inputs(pretrained) if pretrained is not None else {}
    with torch.no_grad():
        for key, target in own.items():
            source = state[key]
            module_name = key.rsplit(".", 1)[0]
            same_split = old_joins.get(module_name, new_joins.get(module_name)) == new_joins.get(module_name)
            if source.shape == target.shape and same_split:
                target.copy_(source)
                continue
            if source.dim() != target.dim() or any(a > b for a, b in zip(source.shape, target.shape)):
                raise ValueError(f"pretrained weight {key}: shape {tuple(source.shape)} does not fit {tuple(target.shape)}")
            if source.dim() == 1:  # biases (per output channel) and shared activation slopes
                target[: source.shape[0]] = source
                continue
            transposed = isinstance(modules.get(module_name), torch.nn.ConvTranspose3d)
            # A view with outputs first, inputs second: writes to it land in ``target``.
            view = target.transpose(0, 1) if transposed else target
            weights = source.transpose(0, 1) if transposed else source
            n_out, n_in = weights.shape[:2]
            if module_name in new_joins and view.shape[1] != n_in:
                if module_name not in old_joins:
                    raise ValueError(f"pretrained weight {key}: its input joins two tensors; the pretrained "
                                     "network is needed to know how they were split")
                in_index = _old_channels_in_new(old_joins[module_name], new_joins[module_name])
            else:
                in_index = torch.arange(n_in)
            out_index = torch.arange(n_out)
            view[:n_out] = 0  # pretrained outputs ignore every new input ...
            view[out_index[:, None], in_index[None, :]] = weights  # ... and see their old ones as before
    network.load_state_dict(own)
