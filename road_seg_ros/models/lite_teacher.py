"""The pretrained teacher: DeepLabV3+ on an ImageNet EfficientNet-Lite encoder, dilated to output stride 16
or 8. High accuracy, not real time: its logits are the distillation and adaptation target.

Atrous spatial pyramid pooling on the deepest features, a 1/4 skip projected to 48 channels, and two
depthwise-separable 3x3 convolutions in the decoder (the DeepLabV3+ paper's choice for its Xception model,
which keeps the 1/4-resolution decoder a tenth of a dense one's cost).
"""

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.segmentation.deeplabv3 import ASPP

from . import fields
from .blocks import ConvBNAct
from .efficientnet import VARIANTS, EfficientNetLite
from .lite_student import init_new_layers


@dataclass
class LiteTeacherConfig:
    num_classes: int = 11
    encoder: str = "efficientnet_lite2"
    output_stride: int = 16
    atrous_rates: tuple = (6, 12, 18)  # for output stride 16; double them at 8
    aux_head: bool = False

    def to_dict(self):
        return asdict(self)


FIELD_CHECKS = {
    "num_classes": fields.integer(*fields.NUM_CLASSES),
    "encoder": fields.choice(*VARIANTS),
    "output_stride": fields.choice(8, 16),
    "atrous_rates": fields.integers(fields.BRANCHES, *fields.DILATION),
    "aux_head": fields.boolean,
}


def lite_teacher_config(**overrides) -> LiteTeacherConfig:
    """The default pretrained teacher with ``overrides``; every field checked against its bounds (ValueError)."""
    values = {**LiteTeacherConfig().to_dict(), **overrides}
    fields.check_fields("lite_teacher", FIELD_CHECKS, values)
    values["atrous_rates"] = tuple(values["atrous_rates"])
    return LiteTeacherConfig(**values)


def separable(in_ch, out_ch):
    """A depthwise 3x3 then a pointwise convolution, each with BatchNorm and ReLU."""
    return nn.Sequential(ConvBNAct(in_ch, in_ch, 3, groups=in_ch), ConvBNAct(in_ch, out_ch, 1))


class LiteDeepLabV3Plus(nn.Module):
    def __init__(self, config: LiteTeacherConfig | None = None):
        super().__init__()
        self.config = c = config or LiteTeacherConfig()
        self.encoder = EfficientNetLite(c.encoder, output_stride=c.output_stride)
        quarter, _, middle, top = self.encoder.channels
        self.aspp = ASPP(top, list(c.atrous_rates), out_channels=256)
        self.low_project = ConvBNAct(quarter, 48, 1)
        self.decoder = nn.Sequential(separable(256 + 48, 256), separable(256, 256))
        self.classifier = nn.Conv2d(256, c.num_classes, 1)
        self.aux_classifier = (
            nn.Sequential(ConvBNAct(middle, 128, 3), nn.Conv2d(128, c.num_classes, 1)) if c.aux_head else None
        )
        init_new_layers(self, skip=self.encoder)

    def forward(self, x):
        size = x.shape[-2:]
        quarter, _, middle, top = self.encoder(x)
        context = F.interpolate(self.aspp(top), size=quarter.shape[-2:], mode="bilinear", align_corners=False)
        decoded = self.decoder(torch.cat([context, self.low_project(quarter)], dim=1))
        result = {"out": F.interpolate(self.classifier(decoded), size=size, mode="bilinear", align_corners=False)}
        if self.aux_classifier is not None and self.training:
            aux = self.aux_classifier(middle)
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result
