"""EfficientNet-Lite (Tan and Le; the TensorFlow Lite variant): the ImageNet encoder of the pretrained networks.

Inverted-residual (MBConv) blocks without squeeze-excitation, ReLU6, a fixed 32-channel stem, and
TensorFlow's "same" padding on strided convolutions (the pretrained weights were trained with it). Lite0, 1
and 2 differ only in their width and depth coefficients. The encoder returns the features at strides 4, 8,
16 and 32; ``output_stride`` 16 or 8 trades the last strides for dilation, as DeepLab does.

Module names are this file's own; ``pretrained.py`` maps the published weights' names onto them.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import ConvBNAct

BN_EPS = 1e-3  # TensorFlow's, which the pretrained statistics were gathered with
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280  # the ImageNet classifier's last convolution, fixed in the Lite family


@dataclass(frozen=True)
class StageSpec:
    """One run of MBConv blocks as EfficientNet-B0 defines it, before width and depth scaling."""

    kernel: int
    stride: int
    expand: int
    out_channels: int
    repeats: int


B0_STAGES = (
    StageSpec(3, 1, 1, 16, 1),
    StageSpec(3, 2, 6, 24, 2),  # ends at stride 4
    StageSpec(5, 2, 6, 40, 2),  # stride 8
    StageSpec(3, 2, 6, 80, 3),
    StageSpec(5, 1, 6, 112, 3),  # stride 16
    StageSpec(5, 2, 6, 192, 4),
    StageSpec(3, 1, 6, 320, 1),  # stride 32
)
FEATURE_STAGES = (1, 2, 4, 6)  # the stages whose outputs are the features at strides 4, 8, 16, 32
# (width, depth) coefficients of the Lite family.
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
}


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's round_filters: scaled, rounded to a multiple of ``divisor``, never below 90% of the scaled."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def stage_specs(variant: str) -> list[StageSpec]:
    """The stages of a Lite variant: widths scaled, repeats scaled except the first and last stage's (Lite)."""
    width, depth = VARIANTS[variant]
    last = len(B0_STAGES) - 1
    return [
        StageSpec(
            s.kernel,
            s.stride,
            s.expand,
            round_channels(s.out_channels, width),
            s.repeats if index in (0, last) else math.ceil(s.repeats * depth),
        )
        for index, s in enumerate(B0_STAGES)
    ]


class SamePad(nn.Module):
    """TensorFlow's "same" padding for a strided convolution: the output is ceil(input / stride), and the odd
    pixel of padding goes to the bottom and right."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)


class ConvBNReLU6(ConvBNAct):
    """Convolution, BatchNorm (TensorFlow's epsilon), ReLU6; no padding when ``same_pad`` (a SamePad precedes)."""

    def __init__(self, in_ch, out_ch, kernel_size=1, stride=1, dilation=1, groups=1, act=True, same_pad=False):
        super().__init__(in_ch, out_ch, kernel_size, stride, dilation, groups, act=False)
        self[1].eps = BN_EPS
        if same_pad:
            self[0].padding = (0, 0)
        if act:
            self.append(nn.ReLU6(inplace=True))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, k x k depthwise, 1x1 linear projection; a residual when shapes allow."""

    def __init__(self, in_ch, out_ch, kernel, stride, expand, dilation=1):
        super().__init__()
        hidden = in_ch * expand
        self.expand = ConvBNReLU6(in_ch, hidden) if expand != 1 else None
        self.pad = SamePad(kernel, stride) if stride > 1 else None
        self.depthwise = ConvBNReLU6(hidden, hidden, kernel, stride, dilation, groups=hidden, same_pad=stride > 1)
        self.project = ConvBNReLU6(hidden, out_ch, act=False)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x):
        out = self.expand(x) if self.expand is not None else x
        if self.pad is not None:
            out = self.pad(out)
        out = self.project(self.depthwise(out))
        return x + out if self.residual else out


class EfficientNetLite(nn.Module):
    """The encoder: ``forward`` returns the features at strides 4, 8, 16 and 32 (or less, with dilation).

    ``classifier=True`` adds the ImageNet head (1x1 convolution to 1280, pooling, linear to 1000 classes) and
    ``classify`` runs it: only to check pretrained weights, never part of a segmentation network.
    """

    def __init__(self, variant: str = "efficientnet_lite0", output_stride: int = 32, classifier: bool = False):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown encoder {variant!r}; choose from {', '.join(VARIANTS)}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"encoder output_stride must be 8, 16 or 32, got {output_stride!r}")
        self.variant = variant
        self.stem_pad = SamePad(3, 2)
        self.stem = ConvBNReLU6(3, STEM_CHANNELS, 3, stride=2, same_pad=True)
        self.blocks = nn.ModuleList()
        self.feature_blocks, self.channels = [], []
        in_ch, stride, dilation = STEM_CHANNELS, 2, 1
        for index, spec in enumerate(stage_specs(variant)):
            for repeat in range(spec.repeats):
                block_stride = spec.stride if repeat == 0 else 1
                if block_stride > 1 and stride >= output_stride:
                    dilation, block_stride = dilation * block_stride, 1
                stride *= block_stride
                self.blocks.append(MBConv(in_ch, spec.out_channels, spec.kernel, block_stride, spec.expand, dilation))
                in_ch = spec.out_channels
            if index in FEATURE_STAGES:
                self.feature_blocks.append(len(self.blocks) - 1)
                self.channels.append(in_ch)
        self.head = ConvBNReLU6(in_ch, HEAD_CHANNELS) if classifier else None
        self.fc = nn.Linear(HEAD_CHANNELS, 1000) if classifier else None

    def forward(self, x) -> list[torch.Tensor]:
        x = self.stem(self.stem_pad(x))
        features = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.feature_blocks:
                features.append(x)
        return features

    def classify(self, x) -> torch.Tensor:
        """ImageNet logits (needs ``classifier=True``)."""
        pooled = self.head(self.forward(x)[-1]).mean(dim=(2, 3))
        return self.fc(pooled)
