"""The real-time student: a from-scratch encoder, asymmetric pyramid, coordinate attention
and a light decoder with a skip from the 1/4 stage.

    input (H x W) -> stem, 1/2 -> stage 2, 1/4 ---------------------------> skip
                                   -> stage 3, 1/8 -> pyramid -> up x2 -> concat -> head -> up x4
"""

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from . import fields
from .blocks import (
    AsymmetricPyramid,
    AsymmetricResidualBlock,
    ConvBNAct,
    CoordinateAttention,
    Downsample,
)


@dataclass
class StudentConfig:
    num_classes: int = 11
    stem_channels: int = 24
    stage2_channels: int = 48
    stage3_channels: int = 96
    stage2_dilations: tuple = (1, 2, 2)
    stage3_dilations: tuple = (2, 2, 4, 4, 8, 8)
    pyramid_dilations: tuple = (2, 4, 8)
    decoder_channels: int = 48
    skip_channels: int = 24
    aux_head: bool = False  # an extra classifier on stage 3, used in training only

    def to_dict(self):
        return asdict(self)


WIDTHS = ("stem_channels", "stage2_channels", "stage3_channels", "decoder_channels", "skip_channels")


def widened(config: StudentConfig, factor: float) -> StudentConfig:
    """``config`` with every width times ``factor``, depths and dilations unchanged."""
    return replace(config, **{name: round(getattr(config, name) * factor) for name in WIDTHS})


MEDIUM = StudentConfig(
    stem_channels=32,
    stage2_channels=64,
    stage3_channels=128,
    stage3_dilations=(2, 2, 4, 4, 8, 8, 16, 16),
    decoder_channels=64,
    skip_channels=32,
)

# The sizes we train and ship; any field can still be overridden from a config file.
STUDENT_SIZES = {
    "tiny": StudentConfig(
        stem_channels=16,
        stage2_channels=32,
        stage3_channels=64,
        stage2_dilations=(1, 2),
        stage3_dilations=(2, 4, 4, 8),
        decoder_channels=32,
        skip_channels=16,
    ),
    "small": StudentConfig(),
    "medium": MEDIUM,
    # The shipped default (3.21 GFLOPs at 360x480 against 2.10): more accurate on val than `medium` with the
    # same recipe (docs/results.md).
    "wide": widened(MEDIUM, 1.25),
}


_CHANNELS = fields.integer(*fields.CHANNELS)
FIELD_CHECKS = {
    "num_classes": fields.integer(*fields.NUM_CLASSES),
    "stem_channels": _CHANNELS,
    "stage2_channels": _CHANNELS,
    "stage3_channels": _CHANNELS,
    "stage2_dilations": fields.integers(fields.BLOCKS, *fields.DILATION),
    "stage3_dilations": fields.integers(fields.BLOCKS, *fields.DILATION),
    "pyramid_dilations": fields.integers(fields.BRANCHES, *fields.DILATION),
    "decoder_channels": _CHANNELS,
    "skip_channels": _CHANNELS,
    "aux_head": fields.boolean,
}


def student_config(size="small", **overrides) -> StudentConfig:
    """A preset size with ``overrides``; every field is checked against its bounds (ValueError)."""
    if not isinstance(size, str) or size not in STUDENT_SIZES:
        raise ValueError(f"unknown student size {fields.short(size)}; choose from {sorted(STUDENT_SIZES)}")
    values = {**STUDENT_SIZES[size].to_dict(), **overrides}
    fields.check_fields("student", FIELD_CHECKS, values)
    if not values["stem_channels"] < values["stage2_channels"] < values["stage3_channels"]:
        raise ValueError("student channels must widen: stem_channels < stage2_channels < stage3_channels")
    for key in ("stage2_dilations", "stage3_dilations", "pyramid_dilations"):
        values[key] = tuple(values[key])
    return StudentConfig(**values)


class Stage(nn.Sequential):
    """Downsample, a run of asymmetric residual blocks, then coordinate attention."""

    def __init__(self, in_ch, out_ch, dilations):
        super().__init__(
            Downsample(in_ch, out_ch),
            *(AsymmetricResidualBlock(out_ch, d) for d in dilations),
            CoordinateAttention(out_ch),
        )


class RoadSegStudent(nn.Module):
    def __init__(self, config: StudentConfig | None = None):
        super().__init__()
        self.config = c = config or StudentConfig()
        self.stem = ConvBNAct(3, c.stem_channels, 3, stride=2)
        self.stage2 = Stage(c.stem_channels, c.stage2_channels, c.stage2_dilations)
        self.stage3 = Stage(c.stage2_channels, c.stage3_channels, c.stage3_dilations)
        self.pyramid = AsymmetricPyramid(
            c.stage3_channels, c.decoder_channels, c.decoder_channels // 2, c.pyramid_dilations
        )
        self.skip = ConvBNAct(c.stage2_channels, c.skip_channels, 1)
        fused = c.decoder_channels + c.skip_channels
        self.decoder = nn.Sequential(
            ConvBNAct(fused, fused, 3, groups=fused),
            ConvBNAct(fused, c.decoder_channels, 1),
            CoordinateAttention(c.decoder_channels),
        )
        self.classifier = nn.Conv2d(c.decoder_channels, c.num_classes, 1)
        self.aux_classifier = (
            nn.Sequential(
                ConvBNAct(c.stage3_channels, c.decoder_channels, 3), nn.Conv2d(c.decoder_channels, c.num_classes, 1)
            )
            if c.aux_head
            else None
        )
        _init_weights(self)

    def forward(self, x):
        size = x.shape[-2:]
        quarter = self.stage2(self.stem(x))
        eighth = self.stage3(quarter)
        context = self.pyramid(eighth)
        context = F.interpolate(context, size=quarter.shape[-2:], mode="bilinear", align_corners=False)
        features = self.decoder(torch.cat([context, self.skip(quarter)], dim=1))
        logits = F.interpolate(self.classifier(features), size=size, mode="bilinear", align_corners=False)
        result = {"out": logits}
        if self.aux_classifier is not None and self.training:
            aux = self.aux_classifier(eighth)
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result


def _init_weights(module):
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
