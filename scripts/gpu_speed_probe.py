"""Where the student's GPU time goes, and which way of running the same network is fastest.

    python scripts/gpu_speed_probe.py models/student.safetensors --json OUT/probe.json --markdown OUT/probe.md

The student runs well above its memory floor on a GPU (scripts/memory_floor.py), and cuDNN's depthwise
kernel on its non-square depthwise convolutions takes most of the GPU time at 720x960 (benchmarks/README.md,
benchmarks/gpu_probe.md). This times the engine's network
(BatchNorm folded, argmax inside, batch 1) model only, in turn:

- ``channels_last``: as the engine runs it today (PyTorch then sends every depthwise convolution to cuDNN);
- ``nchw``: the same in the default layout (non-square depthwise kernels then go to PyTorch's own kernel);
- ``+pairs`` of either: each depthwise 3x1 then 1x3 pair as one depthwise 3x3 (exact, see DepthwisePair);
- ``+shifts``: each of those depthwise convolutions as shifted, scaled sums (ShiftedDepthwise), for the compiler;
- ``compile``: ``torch.compile`` of ``channels_last`` (its compile time is reported too);
- ``+graph``: captured in one CUDA graph, as the engine runs it (eager timings are launch-bound at 360x480);

checks that each gives the labels of the first, and profiles ``channels_last`` at the largest size:
the CUDA kernels that take the time, per kernel name. Nothing here changes the engine; a layout that wins
becomes an engine change measured end to end by road-seg-bench.
"""

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from road_seg_ros.core.backends import LabelsNet  # noqa: E402
from road_seg_ros.core.checkpoint import load_checkpoint  # noqa: E402
from road_seg_ros.core.cli import parse_size  # noqa: E402
from road_seg_ros.core.device_pipeline import GraphedStep  # noqa: E402
from road_seg_ros.models import fuse_conv_bn, shift_depthwise  # noqa: E402
from road_seg_ros.models.blocks import AsymmetricResidualBlock  # noqa: E402

VARIANTS = (
    "channels_last",
    "nchw",
    "channels_last+pairs",
    "nchw+pairs",
    "compile",
    "channels_last+graph",
    "compile+graph",
    "compile+shifts+graph",
)


class DepthwisePair(nn.Module):
    """A folded depthwise 3x1 convolution then a folded depthwise 1x3 one and ReLU, as one depthwise 3x3.

    The kernels compose exactly (their outer product, dilations kept per axis). The first one's bias does not
    fold into one number: the second convolution pads its input with zeros, so near the left and right edges
    fewer of its taps see that bias. A per-column bias (C x width) carries it exactly.
    """

    def __init__(self, first: nn.Sequential, second: nn.Sequential):
        super().__init__()
        vertical, horizontal = first[0], second[0]
        self.dilation = (vertical.dilation[0], horizontal.dilation[1])
        self.register_buffer("weight", (vertical.weight * horizontal.weight).detach())  # C,1,3,1 x C,1,1,3
        self.register_buffer("first_bias", vertical.bias.detach())
        self.register_buffer("taps", horizontal.weight.detach()[:, 0, 0, :])  # C x 3
        self.register_buffer("second_bias", horizontal.bias.detach())
        self._column_bias = {}

    def column_bias(self, x):
        key = (x.shape[-1], x.device, x.dtype)
        if key not in self._column_bias:
            width, step = x.shape[-1], self.dilation[1]
            columns = torch.arange(width, device=self.taps.device)
            shifted = torch.stack([columns + (k - 1) * step for k in range(3)])  # 3 x width
            inside = ((shifted >= 0) & (shifted < width)).to(self.taps.dtype)
            bias = self.first_bias[:, None] * (self.taps @ inside) + self.second_bias[:, None]  # C x width
            self._column_bias[key] = bias[None, :, None, :].to(x.device, x.dtype)
        return self._column_bias[key]

    def forward(self, x):
        out = F.conv2d(x, self.weight.to(x.dtype), None, 1, self.dilation, self.dilation, x.shape[1])
        return F.relu(out + self.column_bias(x))


def fuse_depthwise_pairs(net: nn.Module) -> nn.Module:
    """Every residual block's two depthwise pairs as DepthwisePair (in place; BatchNorm already folded)."""
    for module in net.modules():
        if isinstance(module, AsymmetricResidualBlock):
            module.local = DepthwisePair(*module.local)
            module.context = DepthwisePair(*module.context)
    return net


def build(base: nn.Module, variant: str, device, dtype) -> tuple[nn.Module, torch.memory_format]:
    """The network for ``variant`` and its input layout (compilation happens at the first call)."""
    parts = variant.split("+")
    net = copy.deepcopy(base)
    if "pairs" in parts:
        fuse_depthwise_pairs(net.net)
    if "shifts" in parts:
        shift_depthwise(net.net)
    layout = torch.contiguous_format if "nchw" in parts else torch.channels_last
    net = net.to(device, dtype, memory_format=layout).eval()
    net = torch.compile(net, dynamic=False) if "compile" in parts else net
    return (Graphed(net) if "graph" in parts else net), layout


class Graphed:
    """The network in one CUDA graph per input shape, captured by the engine's own capture (warm-up runs on a
    side stream, then the graph; eager if capture fails), replayed after: timed as the engine runs it."""

    def __init__(self, net):
        self.net, self.shape = net, None

    def __call__(self, batch):
        if self.shape != batch.shape:
            self.shape, self.input = batch.shape, batch.clone()
            self.run = GraphedStep(self._step, use_graph=True)
        self.input.copy_(batch)
        self.run()
        return self.output

    def _step(self):
        self.output = self.net(self.input)


def time_forward(net, batch, iterations: int, warmup: int) -> tuple[float, torch.Tensor, float]:
    """The mean milliseconds of a forward pass over ``iterations`` (after ``warmup``), the labels, and the
    seconds the first call took (compilation, autotuning)."""
    cuda = batch.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.inference_mode():
        started = time.perf_counter()
        labels = net(batch)
        sync()
        first = time.perf_counter() - started
        for _ in range(warmup):
            net(batch)
        sync()
        started = time.perf_counter()
        for _ in range(iterations):
            net(batch)
        sync()
    return (time.perf_counter() - started) / iterations * 1e3, labels, first


def kernel_table(net, batch, iterations: int, rows: int) -> list[dict]:
    """The CUDA kernels (or CPU operators, off CUDA) that take the time, per name, summed over ``iterations``."""
    from torch.profiler import ProfilerActivity, profile

    cuda = batch.device.type == "cuda"
    activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with torch.inference_mode(), profile(activities=activities) as profiler:
        for _ in range(iterations):
            net(batch)
        if cuda:
            torch.cuda.synchronize()
    totals = {}
    for event in profiler.events():
        is_kernel = str(event.device_type).endswith("CUDA") if cuda else event.cpu_parent is None
        if not is_kernel:
            continue
        micros = event.device_time if cuda else event.cpu_time
        calls, total = totals.get(event.name, (0, 0.0))
        totals[event.name] = (calls + 1, total + micros)
    spent = sum(total for _, total in totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda item: -item[1][1])[:rows]
    return [
        {"kernel": name[:90], "calls_per_frame": calls / iterations, "ms_per_frame": total / iterations / 1e3,
         "share": total / spent}
        for name, (calls, total) in ranked
    ]  # fmt: skip


def markdown(report: dict) -> str:
    lines = [f"# GPU speed probe: {report['device']}", "", f"`{report['command']}`", "",
             "| variant | size | ms a frame (model only, batch 1) | vs the first | labels equal | first call s |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for row in report["timings"]:
        lines.append(f"| {row['variant']} | {row['size']} | {row['ms']:.3f} | {row['speedup']:.2f}x | "
                     f"{row['labels_equal']:.5f} | {row['first_call_s']:.1f} |")  # fmt: skip
    lines += ["", f"Kernels of channels_last at {report['profile_size']}:", "",
              "| kernel | calls a frame | ms a frame | share |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for row in report["kernels"]:
        lines.append(f"| `{row['kernel']}` | {row['calls_per_frame']:.0f} | {row['ms_per_frame']:.3f} | "
                     f"{row['share']:.1%} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(360, 480), (720, 960)])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to check this script")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.backends.cudnn.benchmark = True  # as the engine runs
    model, _ = load_checkpoint(args.checkpoint)
    base = LabelsNet(fuse_conv_bn(model.eval())).eval()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = {"device": name, "torch": torch.__version__, "command": " ".join(["python", *sys.argv]),
              "timings": [], "kernels": [], "profile_size": "x".join(map(str, args.sizes[-1]))}  # fmt: skip
    # the profile first and the compiled variant last: a run cut short by its time limit loses the least
    net, layout = build(base, "channels_last", device, dtype)
    frame = torch.randn(1, 3, *args.sizes[-1], device=device, dtype=dtype).contiguous(memory_format=layout)
    time_forward(net, frame, 5, 5)
    report["kernels"] = kernel_table(net, frame, 20, 15)
    _write(report, args)
    frames = {size: torch.randn(1, 3, *size, device=device, dtype=dtype) for size in args.sizes}
    first_variant = {}  # size -> (labels, ms) of the first variant, which the others are compared with
    for variant in args.variants:
        net, layout = build(base, variant, device, dtype)
        for size, frame in frames.items():
            ms, labels, first = time_forward(net, frame.contiguous(memory_format=layout), args.iterations, args.warmup)
            reference, reference_ms = first_variant.setdefault(size, (labels, ms))
            row = {"variant": variant, "size": f"{size[0]}x{size[1]}", "ms": ms, "speedup": reference_ms / ms,
                   "labels_equal": (labels == reference).float().mean().item(), "first_call_s": first}  # fmt: skip
            report["timings"].append(row)
            print(json.dumps(row), flush=True)
            _write(report, args)
    print(markdown(report))


def _write(report, args):
    """Written after every row, so a run cut short still leaves what it measured."""
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(report))


if __name__ == "__main__":
    main()
