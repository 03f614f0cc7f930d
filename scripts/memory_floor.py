"""The least time a network's forward pass can take on a GPU, from the bytes its operations move.

    python scripts/memory_floor.py models/student.safetensors [--sizes 360x480 720x960] [--bandwidth 3.35]

Runs the engine's network (BatchNorm folded, argmax inside) once on the CPU and counts, for every tensor
operation as PyTorch executes it unfused, the bytes it reads and writes at fp16 (2 bytes per element). The
bytes over the memory bandwidth (TB/s; the H100 SXM's HBM3: 3.35) give the floor for that kind of execution.
A measured time far above both this floor and the FLOP floor means the kernels themselves are slow, not the
memory or the arithmetic (benchmarks/README.md, "How to read the GPU numbers").
"""

import argparse
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from road_seg_ros.core.backends import LabelsNet  # noqa: E402
from road_seg_ros.core.checkpoint import load_checkpoint  # noqa: E402
from road_seg_ros.core.cli import parse_size  # noqa: E402
from road_seg_ros.models import fuse_conv_bn  # noqa: E402

BYTES_PER_ELEMENT = 2  # fp16, as the GPU engine runs
VIEWS = {"view", "_unsafe_view", "permute", "expand", "t", "transpose", "unsqueeze", "squeeze", "detach", "alias",
         "as_strided", "slice", "select"}  # fmt: skip  # metadata only: no bytes move


class ByteCount(TorchDispatchMode):
    """Counts the operations and the bytes of their tensor inputs and outputs, per operation name."""

    def __init__(self):
        super().__init__()
        self.per_op = {}  # name -> [calls, bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func._overloadpacket.__name__
        if name not in VIEWS:
            tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
            calls, moved = self.per_op.get(name, (0, 0))
            self.per_op[name] = (calls + 1, moved + BYTES_PER_ELEMENT * sum(t.numel() for t in tensors))
        return out

    @property
    def operations(self) -> int:
        return sum(calls for calls, _ in self.per_op.values())

    @property
    def bytes(self) -> int:
        return sum(moved for _, moved in self.per_op.values())


def count(network: torch.nn.Module, size) -> ByteCount:
    frame, counter = torch.randn(1, 3, *size), ByteCount()
    with torch.no_grad(), counter:
        network(frame)
    return counter


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(360, 480), (720, 960)])
    parser.add_argument("--bandwidth", type=float, default=3.35, help="memory bandwidth in TB/s")
    args = parser.parse_args(argv)
    model, _ = load_checkpoint(args.checkpoint)
    network = LabelsNet(fuse_conv_bn(model.eval())).eval()
    for size in args.sizes:
        counter = count(network, size)
        largest = sorted(counter.per_op.items(), key=lambda item: -item[1][1])[:4]
        print(f"{size[0]}x{size[1]}: {counter.operations} operations, {counter.bytes / 1e6:.0f} MB moved at fp16, "
              f"floor {counter.bytes / (args.bandwidth * 1e12) * 1e3:.3f} ms at {args.bandwidth:g} TB/s; largest: "
              + ", ".join(f"{name} {moved / 1e6:.0f} MB in {calls}" for name, (calls, moved) in largest))  # fmt: skip


if __name__ == "__main__":
    main()
