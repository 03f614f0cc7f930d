"""Building blocks of the student network.

Each module is named for what it is. They use BatchNorm everywhere because the
networks train from scratch, where normalisation is what keeps deep stacks of
factorised convolutions trainable.
"""

import torch
from torch import nn
from torch.nn import functional as F


class ConvBNAct(nn.Sequential):
    """Convolution, BatchNorm, then ReLU (or no activation with ``act=False``)."""

    def __init__(self, in_ch, out_ch, kernel_size=3, stride=1, dilation=1, groups=1, act=True):
        if isinstance(kernel_size, int):
            kernel_size = (kernel_size, kernel_size)
        if isinstance(dilation, int):
            dilation = (dilation, dilation)
        padding = tuple((k - 1) // 2 * d for k, d in zip(kernel_size, dilation))
        layers = [
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, dilation, groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Downsample(nn.Module):
    """Halves the resolution: a strided 3x3 convolution beside a 2x2 max-pool, concatenated.

    The pooled path carries the input channels through for free (ENet's initial
    block), so the convolution only has to produce the new channels.
    """

    def __init__(self, in_ch, out_ch):
        super().__init__()
        if out_ch <= in_ch:
            raise ValueError(f"Downsample must widen: {in_ch} -> {out_ch}")
        self.conv = nn.Conv2d(in_ch, out_ch - in_ch, 3, stride=2, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x):
        conv = self.conv(x)
        pool = self.pool(x)
        if pool.shape[-2:] != conv.shape[-2:]:
            pool = pool[..., : conv.shape[-2], : conv.shape[-1]]
        return F.relu(self.bn(torch.cat([conv, pool], dim=1)), inplace=True)


class AsymmetricResidualBlock(nn.Module):
    """Depthwise factorised residual block (DABNet-style).

    Two depthwise paths of 3x1 then 1x3 convolutions, one local and one
    dilated for context, summed and mixed by a pointwise convolution.
    """

    def __init__(self, channels, dilation=1):
        super().__init__()
        self.local = nn.Sequential(
            ConvBNAct(channels, channels, (3, 1), groups=channels, act=False),
            ConvBNAct(channels, channels, (1, 3), groups=channels),
        )
        self.context = nn.Sequential(
            ConvBNAct(channels, channels, (3, 1), dilation=(dilation, 1), groups=channels, act=False),
            ConvBNAct(channels, channels, (1, 3), dilation=(1, dilation), groups=channels),
        )
        self.mix = ConvBNAct(channels, channels, 1, act=False)

    def forward(self, x):
        return F.relu(x + self.mix(self.local(x) + self.context(x)), inplace=True)


class CoordinateAttention(nn.Module):
    """Coordinate attention (Hou et al., CVPR 2021).

    Pools along width and along height separately, so each gate keeps the
    position along the other axis: thin vertical things (poles) and long
    horizontal things (road, sidewalk edges) get their own weights.
    """

    def __init__(self, channels, reduction=32, min_channels=8):
        super().__init__()
        hidden = max(min_channels, channels // reduction)
        self.reduce = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.Hardswish(inplace=True),
        )
        self.gate_h = nn.Conv2d(hidden, channels, 1)
        self.gate_w = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        height, width = x.shape[-2:]
        pooled_h = x.mean(dim=3, keepdim=True)  # N x C x H x 1
        pooled_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # N x C x W x 1
        shared = self.reduce(torch.cat([pooled_h, pooled_w], dim=2))
        shared_h, shared_w = torch.split(shared, [height, width], dim=2)
        attention_h = torch.sigmoid(self.gate_h(shared_h))
        attention_w = torch.sigmoid(self.gate_w(shared_w.transpose(2, 3)))
        return x * attention_h * attention_w


class AsymmetricPyramid(nn.Module):
    """Asymmetric convolutional pyramid on top of the encoder.

    Parallel branches: a 1x1 convolution, several factorised branches (3x1
    then 1x3, both dilated) at growing rates, and image-level pooling; the
    branches are concatenated and fused by a 1x1 convolution.
    """

    def __init__(self, in_ch, out_ch, branch_ch, dilations=(2, 4, 8)):
        super().__init__()
        self.point = ConvBNAct(in_ch, branch_ch, 1)
        self.branches = nn.ModuleList(
            nn.Sequential(
                ConvBNAct(in_ch, branch_ch, (3, 1), dilation=(d, 1)),
                ConvBNAct(branch_ch, branch_ch, (1, 3), dilation=(1, d)),
            )
            for d in dilations
        )
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNAct(in_ch, branch_ch, 1))
        self.fuse = ConvBNAct(branch_ch * (len(dilations) + 2), out_ch, 1)

    def forward(self, x):
        pooled = self.image_pool(x).expand(-1, -1, x.shape[-2], x.shape[-1])
        outputs = [self.point(x), *(branch(x) for branch in self.branches), pooled]
        return self.fuse(torch.cat(outputs, dim=1))


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Folds every ConvBNAct's BatchNorm into its convolution, for inference (in place)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in model.modules():
        if isinstance(module, ConvBNAct) and isinstance(module[1], nn.BatchNorm2d):
            module[0] = fuse_conv_bn_eval(module[0], module[1])
            module[1] = nn.Identity()
    return model


class ShiftedDepthwise(nn.Module):
    """A depthwise k x 1 or 1 x k convolution (stride 1) as the sum of k shifted copies of its input, each scaled per
    channel: elementwise arithmetic, which torch.compile fuses into one kernel (with what follows it), where
    cuDNN runs its slow grouped kernel for a non-square depthwise convolution."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, device=conv.weight.device)
        self.axis = 2 if conv.kernel_size[0] > 1 else 3
        self.dilation, self.padding = conv.dilation[self.axis - 2], conv.padding[self.axis - 2]
        channels = conv.out_channels
        # k x C x 1 x 1: each tap broadcasts over the N x C x H x W input (4-D, so channels_last can convert it)
        self.register_buffer("taps", conv.weight.detach().reshape(channels, -1).t().reshape(-1, channels, 1, 1))
        self.register_buffer("bias", bias.detach().reshape(1, channels, 1, 1))

    def forward(self, x):
        pad = (0, 0, self.padding, self.padding) if self.axis == 2 else (self.padding, self.padding, 0, 0)
        padded, length = F.pad(x, pad), x.shape[self.axis]
        out = self.bias
        for index, tap in enumerate(self.taps):
            out = out + tap * padded.narrow(self.axis, index * self.dilation, length)
        return out


def _non_square_depthwise(module: nn.Module) -> bool:
    """A depthwise k x 1 or 1 x k convolution of stride 1: what ShiftedDepthwise replaces."""
    if not isinstance(module, nn.Conv2d):
        return False
    one_by_k = min(module.kernel_size) == 1 < max(module.kernel_size)
    return one_by_k and module.stride == (1, 1) and module.groups == module.in_channels == module.out_channels


def shift_depthwise(net: nn.Module) -> nn.Module:
    """Every non-square depthwise convolution as ShiftedDepthwise (in place), for torch.compile on a GPU.

    Measured on an H100 (benchmarks/gpu_probe_h100.md), the student compiled and in a CUDA graph: 3.51 ms a
    720x960 frame with cuDNN's depthwise kernel, 0.72 ms with these (4.87x), labels 99.97% the same."""
    for module in net.modules():
        for name, child in module.named_children():
            if _non_square_depthwise(child):
                setattr(module, name, ShiftedDepthwise(child))
    return net
