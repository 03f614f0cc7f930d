"""The teacher: DeepLabV3+ on a torchvision ResNet, randomly initialised.

High accuracy, not real time. It only has to be good enough to teach: its
logits are the distillation target for the student.
"""

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP

from . import fields
from .blocks import ConvBNAct

_LOW_LEVEL_CHANNELS = {"resnet18": 64, "resnet34": 64, "resnet50": 256, "resnet101": 256}
_HIGH_LEVEL_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}


@dataclass
class TeacherConfig:
    num_classes: int = 11
    backbone: str = "resnet50"
    output_stride: int = 8  # 8 or 16: 8 is more accurate and slower
    atrous_rates: tuple = (12, 24, 36)
    aux_head: bool = False

    def to_dict(self):
        return asdict(self)


FIELD_CHECKS = {
    "num_classes": fields.integer(*fields.NUM_CLASSES),
    "backbone": fields.choice(*_LOW_LEVEL_CHANNELS),
    "output_stride": fields.choice(8, 16),  # 8 or 16
    "atrous_rates": fields.integers(fields.BRANCHES, *fields.DILATION),
    "aux_head": fields.boolean,
}


def teacher_config(**overrides) -> TeacherConfig:
    """The default teacher with ``overrides``; every field is checked against its bounds (ValueError)."""
    values = {**TeacherConfig().to_dict(), **overrides}
    fields.check_fields("teacher", FIELD_CHECKS, values)
    values["atrous_rates"] = tuple(values["atrous_rates"])
    return TeacherConfig(**values)


class DeepLabV3Plus(nn.Module):
    def __init__(self, config: TeacherConfig | None = None):
        super().__init__()
        self.config = c = config or TeacherConfig()
        dilate = [False, c.output_stride == 8, True]
        if c.backbone in ("resnet18", "resnet34"):
            # torchvision refuses to dilate BasicBlock networks: build them strided, then dilate by hand.
            backbone = getattr(resnet, c.backbone)(weights=None)
            _dilate_basic_layers(backbone, dilate)
        else:
            backbone = getattr(resnet, c.backbone)(weights=None, replace_stride_with_dilation=dilate)
        self.backbone = IntermediateLayerGetter(backbone, {"layer1": "low", "layer3": "mid", "layer4": "high"})
        high = _HIGH_LEVEL_CHANNELS[c.backbone]
        self.aspp = ASPP(high, list(c.atrous_rates), out_channels=256)
        self.low_project = ConvBNAct(_LOW_LEVEL_CHANNELS[c.backbone], 48, 1)
        self.decoder = nn.Sequential(ConvBNAct(256 + 48, 256, 3), ConvBNAct(256, 256, 3))
        self.classifier = nn.Conv2d(256, c.num_classes, 1)
        self.aux_classifier = (
            nn.Sequential(ConvBNAct(high // 2, 256, 3), nn.Conv2d(256, c.num_classes, 1)) if c.aux_head else None
        )

    def forward(self, x):
        size = x.shape[-2:]
        features = self.backbone(x)
        low = features["low"]
        context = F.interpolate(self.aspp(features["high"]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        decoded = self.decoder(torch.cat([context, self.low_project(low)], dim=1))
        result = {"out": F.interpolate(self.classifier(decoded), size=size, mode="bilinear", align_corners=False)}
        if self.aux_classifier is not None and self.training:
            aux = self.aux_classifier(features["mid"])
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result


def _dilate_basic_layers(backbone: resnet.ResNet, dilate) -> None:
    """Trades the stride of layer2..4 for dilation where ``dilate`` says, as torchvision does for Bottleneck."""
    dilation = 1
    for layer, replace in zip((backbone.layer2, backbone.layer3, backbone.layer4), dilate):
        if not replace:
            continue
        previous, dilation = dilation, dilation * 2
        for index, block in enumerate(layer):
            block.conv1.stride = (1, 1)
            # the first block keeps the previous rate on its first conv, as torchvision's _make_layer does
            first_rate = previous if index == 0 else dilation
            block.conv1.dilation, block.conv1.padding = (first_rate, first_rate), (first_rate, first_rate)
            block.conv2.dilation, block.conv2.padding = (dilation, dilation), (dilation, dilation)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
