"""The pretrained student: an ImageNet EfficientNet-Lite encoder, the asymmetric convolutional pyramid on its
stride-32 features, and a light decoder that fuses the 1/16, 1/8 and 1/4 skips, with coordinate attention in
the fusions it is asked for.

    input -> EfficientNet-Lite -> 1/32 -> pyramid -> up -> fuse 1/16 -> up -> fuse 1/8 (+CA) -> up
          -> fuse 1/4 (+CA) -> classifier -> up x4
"""

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from . import fields
from .blocks import AsymmetricPyramid, ConvBNAct, CoordinateAttention
from .efficientnet import VARIANTS, EfficientNetLite

SKIP_STRIDES = (16, 8, 4)  # the decoder's fusions, coarse to fine


@dataclass
class LiteStudentConfig:
    num_classes: int = 11
    encoder: str = "efficientnet_lite0"
    pyramid_dilations: tuple = (1, 2, 4)  # at stride 32: 12 x 15 positions for a 360 x 480 frame
    decoder_channels: int = 96
    skip_channels: tuple = (48, 32, 24)  # the 1/16, 1/8 and 1/4 skips' widths after their 1x1 projection
    attention_strides: tuple = (8, 4)  # the fusions with coordinate attention
    aux_head: bool = False  # a classifier on the 1/16 features, in training only

    def to_dict(self):
        return asdict(self)


FIELD_CHECKS = {
    "num_classes": fields.integer(*fields.NUM_CLASSES),
    "encoder": fields.choice(*VARIANTS),
    "pyramid_dilations": fields.integers(fields.BRANCHES, *fields.DILATION),
    "decoder_channels": fields.integer(*fields.CHANNELS),
    "skip_channels": fields.integers((3, 3), *fields.CHANNELS),
    "attention_strides": fields.subset(*SKIP_STRIDES),
    "aux_head": fields.boolean,
}


def lite_student_config(**overrides) -> LiteStudentConfig:
    """The default pretrained student with ``overrides``; every field checked against its bounds (ValueError)."""
    values = {**LiteStudentConfig().to_dict(), **overrides}
    fields.check_fields("lite_student", FIELD_CHECKS, values)
    for key in ("pyramid_dilations", "skip_channels", "attention_strides"):
        values[key] = tuple(values[key])
    return LiteStudentConfig(**values)


class SkipFusion(nn.Module):
    """The upsampled coarser features beside a 1x1-projected skip, mixed by a depthwise-separable convolution,
    then optionally coordinate attention."""

    def __init__(self, channels, skip_in, skip_channels, attention):
        super().__init__()
        self.project = ConvBNAct(skip_in, skip_channels, 1)
        fused = channels + skip_channels
        self.mix = nn.Sequential(ConvBNAct(fused, fused, 3, groups=fused), ConvBNAct(fused, channels, 1))
        self.attention = CoordinateAttention(channels) if attention else nn.Identity()

    def forward(self, coarse, skip):
        coarse = F.interpolate(coarse, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.attention(self.mix(torch.cat([coarse, self.project(skip)], dim=1)))


class LiteSegStudent(nn.Module):
    def __init__(self, config: LiteStudentConfig | None = None):
        super().__init__()
        self.config = c = config or LiteStudentConfig()
        self.encoder = EfficientNetLite(c.encoder)
        quarter, eighth, sixteenth, top = self.encoder.channels
        width = c.decoder_channels
        self.pyramid = AsymmetricPyramid(top, width, width // 2, c.pyramid_dilations)
        self.fusions = nn.ModuleList(
            SkipFusion(width, skip_in, skip_ch, stride in c.attention_strides)
            for stride, skip_in, skip_ch in zip(SKIP_STRIDES, (sixteenth, eighth, quarter), c.skip_channels)
        )
        self.classifier = nn.Conv2d(width, c.num_classes, 1)
        self.aux_classifier = (
            nn.Sequential(ConvBNAct(sixteenth, width, 3), nn.Conv2d(width, c.num_classes, 1)) if c.aux_head else None
        )
        init_new_layers(self, skip=self.encoder)

    def forward(self, x):
        size = x.shape[-2:]
        quarter, eighth, sixteenth, top = self.encoder(x)
        features = self.pyramid(top)
        for fusion, skip in zip(self.fusions, (sixteenth, eighth, quarter)):
            features = fusion(features, skip)
        result = {"out": F.interpolate(self.classifier(features), size=size, mode="bilinear", align_corners=False)}
        if self.aux_classifier is not None and self.training:
            aux = self.aux_classifier(sixteenth)
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result


def init_new_layers(module: nn.Module, skip: nn.Module) -> None:
    """Kaiming-initialises every convolution outside ``skip`` (the encoder, which pretrained weights fill)."""
    encoder_modules = set(skip.modules())
    for m in module.modules():
        if m in encoder_modules:
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
