"""Export a checkpoint for deployment: ``road-seg-export --format onnx --out FILE`` or ``--format openvino``.

The exported graph is the engine's network with BatchNorm folded and the
argmax inside: a 1 x 3 x H x W normalised float32 batch in, 1 x H x W uint8
class ids out. The checkpoint's metadata (classes, colours, normalisation,
input size) travels in the file: ONNX metadata, or the OpenVINO IR's rt_info,
under ``road_seg``. ``--format openvino --precision int8`` quantizes it with
NNCF on CamVid train frames and writes it beside the checkpoint, where the
engine's ``--backend openvino --precision int8`` finds it. Every export is
checked by running the written file (in ONNX Runtime or OpenVINO) against the
fp32 PyTorch network on the same frames.
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from ..core.backends import LabelsNet, OnnxRuntimeRunner, RunnerSetup, onnx_bytes
from ..core.checkpoint import METADATA_KEY, CheckpointError, ModelInfo, load_checkpoint
from ..core.cli import whole_number
from ..core.frames import synthetic_frames
from ..core.options import EngineError, default_checkpoint
from ..core.preprocess import normalisation
from ..models import fuse_conv_bn
from .data import DataError

FORMATS = ("onnx", "openvino")
FORMAT_PRECISIONS = {"onnx": ("fp32",), "openvino": ("fp32", "int8")}
# The Python packages each export needs besides PyTorch (ONNX Runtime checks the ONNX file it wrote).
PACKAGES = {("onnx", "fp32"): ("onnx", "onnxruntime"), ("openvino", "fp32"): ("openvino",),
            ("openvino", "int8"): ("openvino", "nncf")}  # fmt: skip
# Fraction of pixels whose labels must match the PyTorch reference. int8 moves labels where two classes are
# close (98.9% equal on a CamVid frame for the shipped student); a broken export matches far fewer.
MIN_AGREEMENT = {"fp32": 0.995, "int8": 0.9}
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


def export_openvino(
    model, info: ModelInfo, checkpoint: Path, out=None, input_size=None, precision="fp32", frames=None
) -> Path:
    """Writes ``model`` as an OpenVINO IR (.xml and .bin) recording ``info`` and the checkpoint's SHA-256; int8
    quantizes it on ``frames`` (uint8, at ``input_size``). Default place: beside the checkpoint, where the engine
    looks for int8 models."""
    import openvino

    from ..core.openvino_backend import METADATA_KEY as IR_KEY
    from ..core.openvino_backend import file_digest, quantized_model_path

    input_size = tuple(input_size or info.input_size)
    network = openvino.Core().read_model(onnx_bytes(fuse_conv_bn(model.eval()), input_size), b"")
    if precision == "int8":
        from .quantize import quantize

        network = quantize(network, info, frames)
    network.set_rt_info(file_digest(checkpoint), [IR_KEY, "checkpoint_sha256"])
    network.set_rt_info(ModelInfo(**{**info.__dict__, "input_size": list(input_size)}).to_json(), [IR_KEY, "info"])
    network.set_rt_info(precision, [IR_KEY, "precision"])
    if precision == "int8":
        network.set_rt_info(f"{len(frames)} CamVid train frames", [IR_KEY, "calibration"])
    default = quantized_model_path(checkpoint, input_size)
    out = Path(out or default.with_name(default.name.replace(".int8.", f".{precision}.")))
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f"{out.stem}.tmp.xml")
    openvino.save_model(network, str(temporary), compress_to_fp16=False)
    # The weights first: the XML, which the engine checks, appears only once its .bin is complete.
    temporary.with_suffix(".bin").replace(out.with_suffix(".bin"))
    temporary.replace(out)
    return out


def label_agreement(predict, model: torch.nn.Module, info: ModelInfo, frames) -> float:
    """Fraction of pixels where ``predict(uint8 frame) -> labels`` and the fp32 PyTorch network give the same class."""
    reference = LabelsNet(fuse_conv_bn(model.eval()))
    scale, offset = normalisation(info.mean, info.std)
    equal = total = 0
    for frame in frames:
        batch = (frame * scale + offset).transpose(2, 0, 1)[np.newaxis].astype(np.float32)
        with torch.inference_mode():
            expected = reference(torch.from_numpy(batch))[0].numpy()
        equal += int((predict(frame) == expected).sum())
        total += expected.size
    return equal / total


def onnx_predictor(onnx_file, info: ModelInfo):
    """``predict(uint8 frame) -> labels`` running an exported ONNX file in ONNX Runtime."""
    runner = OnnxRuntimeRunner(Path(onnx_file), num_threads=torch.get_num_threads())
    scale, offset = normalisation(info.mean, info.std)
    return lambda frame: runner((frame * scale + offset).transpose(2, 0, 1)[np.newaxis].astype(np.float32))[0]


def openvino_predictor(ir_file, info: ModelInfo, input_size, precision: str, checkpoint: Path):
    """``predict(uint8 frame) -> labels`` running an IR file as the engine does (its compiled-model cache too)."""
    from ..core.openvino_backend import OpenVinoRunner

    setup = RunnerSetup(input_size, torch.device("cpu"), precision, 0, info.mean, info.std, checkpoint)
    runner = OpenVinoRunner(Path(ir_file), setup)
    return lambda frame: runner(frame[np.newaxis])[0]


def parse_args(argv=None):
    from .quantize import CALIBRATION_FRAMES

    parser = argparse.ArgumentParser(prog="road-seg-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--checkpoint", type=Path, help="model to export (default: the shipped student)")
    parser.add_argument(
        "--out", type=Path, help="file to write, e.g. student.onnx (openvino: default beside the checkpoint)"
    )
    parser.add_argument(
        "--input-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="fixed input size (default: training's)"
    )
    parser.add_argument(
        "--precision", default="fp32", choices=FORMAT_PRECISIONS["openvino"], help="int8: openvino only (NNCF)"
    )
    parser.add_argument(
        "--data", help="int8: CamVid root for the calibration frames (default: $CAMVID_ROOT or ../shared/camvid)"
    )
    parser.add_argument(
        "--calibration-frames",
        type=whole_number(1),
        default=CALIBRATION_FRAMES,
        metavar="N",
        help=f"int8: train frames to calibrate on (default {CALIBRATION_FRAMES})",
    )
    args = parser.parse_args(argv)
    if args.format == "onnx" and args.out is None:
        parser.error("--format onnx needs --out FILE")
    if args.precision not in FORMAT_PRECISIONS[args.format]:
        parser.error(f"--format {args.format} exports {' or '.join(FORMAT_PRECISIONS[args.format])} only")
    return args


def export_from_args(args) -> str:
    missing = [name for name in PACKAGES[args.format, args.precision] if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"--format {args.format} --precision {args.precision} needs Python packages that are "
                          f"not installed: {', '.join(missing)}")  # fmt: skip
    checkpoint = args.checkpoint or default_checkpoint()
    model, info = load_checkpoint(checkpoint)
    input_size = tuple(args.input_size or info.input_size)
    if min(input_size) < 32:
        raise ExportError(f"--input-size must be at least 32x32, got {input_size[0]}x{input_size[1]}")
    frames = synthetic_frames(input_size, CHECK_FRAMES)
    if args.format == "onnx":
        out = export_onnx(model, info, args.out, input_size)
        predict = onnx_predictor(out, info)
    else:
        if args.precision == "int8":
            from .quantize import calibration_frames

            frames = calibration_frames(args.data, input_size, args.calibration_frames)
        out = export_openvino(model, info, checkpoint, args.out, input_size, args.precision, frames)
        predict = openvino_predictor(out, info, input_size, args.precision, checkpoint)
    # int8 is checked on train frames it was calibrated on: a sanity check of the file, not a measure of accuracy.
    frames = frames[:CHECK_FRAMES]
    agreement = label_agreement(predict, model, info, frames)
    if agreement < MIN_AGREEMENT[args.precision]:
        for path in (out, out.with_suffix(".bin")) if args.format == "openvino" else (out,):
            path.unlink(missing_ok=True)  # never leave a file that failed its check where the engine finds it
        raise ExportError(
            f"{out}: {args.format} {args.precision} labels match PyTorch on only {agreement:.2%} of pixels "
            f"(need {MIN_AGREEMENT[args.precision]:.1%})"
        )
    size_kib = sum(path.stat().st_size for path in (out, out.with_suffix(".bin")) if path.is_file()) / 1024
    return (
        f"wrote {out} ({args.format} {args.precision}, {size_kib:.0f} KiB, input 1x3x{input_size[0]}x{input_size[1]}); "
        f"round trip: {agreement:.2%} of pixels equal to fp32 PyTorch on {len(frames)} frames"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        print(export_from_args(args))
    except (CheckpointError, DataError, EngineError, ExportError, OSError) as error:
        print(f"road-seg-export: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
