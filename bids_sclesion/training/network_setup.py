"""The network a training run starts from, and how its parameters are grouped for the optimiser."""
from __future__ import annotations

import dataclasses
import re

import torch

from ..model.network import OUTPUT_CHANNELS, TISSUE_PRIOR_INPUTS, NetworkConfig
from .config import TrainingConfig


def network_for(config: TrainingConfig, requested: NetworkConfig | None, init=None) -> NetworkConfig:
    """The network to train: the pretrained one (wider if asked), else ``requested``, with a grey matter
    output and tissue-prior inputs added when the run asks for them. A model that took the prior keeps it."""
    network_config = fine_tuned_network(NetworkConfig.from_dict(init.metadata["network"]), requested, config) \
        if init is not None else (requested or NetworkConfig())
    if config.grey_matter_label:
        network_config = dataclasses.replace(network_config, out_channels=max(network_config.out_channels,
                                                                              len(OUTPUT_CHANNELS) + 1))
    if config.tissue_prior or network_config.in_channels > 1:
        if config.space != "straight":
            raise ValueError("--tissue-prior is for stage 2 (--space straight): the prior is fitted to the "
                             "straightened cord")
        network_config = dataclasses.replace(network_config, in_channels=1 + len(TISSUE_PRIOR_INPUTS))
    return network_config


def fine_tuned_network(pretrained: NetworkConfig, requested: NetworkConfig | None,
                        config: TrainingConfig) -> NetworkConfig:
    """The pretrained network, or a wider one built around it when more channels are asked for."""
    if requested is None or tuple(requested.channels) == tuple(pretrained.channels):
        return pretrained
    if len(requested.channels) != len(pretrained.channels) or any(
            new < old for new, old in zip(requested.channels, pretrained.channels)):
        raise ValueError(f"--channels {' '.join(map(str, requested.channels))}: {config.init_from} has channels "
                         f"{' '.join(map(str, pretrained.channels))}; a fine-tuned network may be wider at each "
                         "level, with as many levels, but not narrower")
    if config.freeze == "encoder":
        raise ValueError("--freeze encoder with a wider network (--channels) would leave the new encoder "
                         "channels at their random start; use --freeze none")
    return dataclasses.replace(pretrained, channels=tuple(requested.channels))


#: Encoder of MONAI's UNet: the down-sampling block of each level and the bottom block.
_ENCODER = re.compile(r"^model\.(?:1\.submodule\.)*(?:0\.|1\.submodule\.(?:conv|residual)\.)")


def is_encoder_parameter(name: str) -> bool:
    return bool(_ENCODER.match(name))


def parameter_groups(network: torch.nn.Module, config: TrainingConfig, pretrained: bool):
    """Optimizer groups: with a pretrained start, the encoder is frozen or learns slower."""
    if config.freeze not in ("none", "encoder"):
        raise ValueError(f"freeze must be 'none' or 'encoder', not {config.freeze!r}")
    if not pretrained:
        if config.freeze != "none":
            raise ValueError("--freeze needs --init-from (a pretrained model)")
        return [{"params": list(network.parameters())}], config.learning_rate
    encoder, decoder = [], []
    for name, param in network.named_parameters():
        (encoder if is_encoder_parameter(name) else decoder).append(param)
    if config.freeze == "encoder":
        for param in encoder:
            param.requires_grad_(False)
        return [{"params": decoder}], config.learning_rate
    scaled = config.learning_rate * config.encoder_lr_scale
    return [{"params": encoder, "lr": scaled}, {"params": decoder}], [scaled, config.learning_rate]
