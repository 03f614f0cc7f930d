"""The network a training run starts from: built from its architecture, an encoder's ImageNet weights loaded."""

import torch

from ..core.labels import MEAN, STD
from ..models import build_model, input_statistics
from ..models.pretrained import PretrainedWeightsError, load_imagenet_weights


def initial_network(arch: dict, pretrained: bool) -> torch.nn.Module:
    """An untrained network; with ``pretrained``, a pretrained-encoder network's encoder holds its ImageNet
    weights (ValueError in one line when they cannot be had)."""
    model = build_model(arch)
    encoder = getattr(model, "encoder", None)
    if pretrained and encoder is not None:
        try:
            load_imagenet_weights(encoder)
        except PretrainedWeightsError as error:
            raise ValueError(f"pretrained encoder: {error}") from None
    return model


def normalisation_of(arch: dict) -> tuple:
    """The (mean, std) the network's inputs are normalised with in training, saved with its checkpoint."""
    mean, std = input_statistics(arch, (MEAN, STD))
    return list(mean), list(std)
