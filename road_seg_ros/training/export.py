"""Export a checkpoint for deployment: ``road-seg-export --format onnx --out FILE``.

The ONNX graph is the engine's network with BatchNorm folded and the
argmax inside: a 1 x 3 x H x W normalised float32 batch in, 1 x H x W uint8
class ids out. The checkpoint's metadata (classes, colours, normalisation,
input size) travels in the file's metadata under ``road_seg``. Every export
is checked by running the written file in ONNX Runtime against the fp32
PyTorch network on the same frames.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from ..core.backends import LabelsNet, OnnxRuntimeRunner, onnx_bytes
from ..core.checkpoint import METADATA_KEY, CheckpointError, ModelInfo, load_checkpoint
from ..core.frames import synthetic_frames
from ..core.options import default_checkpoint
from ..core.preprocess import normalisation
from ..models import fuse_conv_bn

FORMATS = ("onnx",)
MIN_AGREEMENT = 0.995  # fraction of pixels whose labels must match the PyTorch reference
CHECK_FRAMES = 3


class ExportError(RuntimeError):
    """An export that failed or did not reproduce the reference; the message is one line."""


def export_onnx(model: torch.nn.Module, info: ModelInfo, out, input_size=None) -> Path:
    """Writes ``model`` (a checkpoint's network) as ONNX with ``info`` in its metadata; returns the path."""
    import onnx

    input_size = tuple(input_size or info.input_size)
    graph = onnx.load_from_string(onnx_bytes(fuse_conv_bn(model.eval()), input_size))
    info_json = ModelInfo(**{**info.__dict__, "input_size": list(input_size)}).to_json()
    onnx.helper.set_model_props(graph, {METADATA_KEY: info_json})
    onnx.checker.check_model(graph)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(out))
    return out


def label_agreement(onnx_file, model: torch.nn.Module, info: ModelInfo, frames) -> float:
    """Fraction of pixels where ONNX Runtime on ``onnx_file`` and fp32 PyTorch give the same class."""
    runner = OnnxRuntimeRunner(Path(onnx_file), num_threads=torch.get_num_threads())
    reference = LabelsNet(fuse_conv_bn(model.eval()))
    scale, offset = normalisation(info.mean, info.std)
    equal = total = 0
    for frame in frames:
        batch = (frame * scale + offset).transpose(2, 0, 1)[np.newaxis].astype(np.float32)
        with torch.inference_mode():
            expected = reference(torch.from_numpy(batch))[0].numpy()
        equal += int((runner(batch)[0] == expected).sum())
        total += expected.size
    return equal / total


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="road-seg-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--checkpoint", type=Path, help="model to export (default: the shipped student)")
    parser.add_argument("--out", type=Path, required=True, help="file to write, e.g. student.onnx")
    parser.add_argument(
        "--input-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="fixed input size (default: training's)"
    )
    return parser.parse_args(argv)


def run(args) -> str:
    checkpoint = args.checkpoint or default_checkpoint()
    model, info = load_checkpoint(checkpoint)
    input_size = tuple(args.input_size or info.input_size)
    if min(input_size) < 32:
        raise ExportError(f"--input-size must be at least 32x32, got {input_size[0]}x{input_size[1]}")
    out = export_onnx(model, info, args.out, input_size)
    agreement = label_agreement(out, model, info, synthetic_frames(input_size, CHECK_FRAMES))
    if agreement < MIN_AGREEMENT:
        raise ExportError(
            f"{out}: ONNX labels match PyTorch on only {agreement:.2%} of pixels (need {MIN_AGREEMENT:.1%})"
        )
    size_kib = out.stat().st_size / 1024
    return (
        f"wrote {out} ({size_kib:.0f} KiB, input 1x3x{input_size[0]}x{input_size[1]}); "
        f"round trip: {agreement:.2%} of pixels equal to PyTorch on {CHECK_FRAMES} frames"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        print(run(args))
    except (CheckpointError, ExportError, OSError) as error:
        print(f"road-seg-export: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
