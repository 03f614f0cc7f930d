"""Benchmark the engine: ``road-seg-bench`` (see benchmarks/ for reports).

For the shipped student and, in the same run, torchvision's LR-ASPP
MobileNetV3-Large and DeepLabV3-ResNet50 (random weights, 11 classes) as
baselines, at each input size, backend and precision (int8: the student only,
from its quantized model beside the checkpoint): model-only latency (forward and
argmax on a prepared batch) and end-to-end latency per engine stage
(``SegmentationEngine.segment``, the call every front end makes), p50 and
p95, FPS from the median, GFLOPs and parameters. The cases are measured
interleaved, a block of repetitions each in turn, so a change in machine
load hits them all alike and the ratios between them stay fair. With
``--node`` it also measures the ROS 2 node's own overhead (see node_bench);
``--node --cameras N`` instead measures N cameras served by one node against
N separate nodes (see cameras_bench).
"""

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.backends import REGISTRY, OnnxRuntimeRunner, onnx_bytes
from ..core.checkpoint import CheckpointError, ModelInfo, load_checkpoint
from ..core.cli import positive_number, whole_number
from ..core.engine import SegmentationEngine
from ..core.frames import synthetic_frames
from ..core.options import DEVICES, PRECISIONS, THREAD_LIMITS, EngineError, EngineOptions, default_checkpoint
from ..core.result import STAGES
from ..models import fuse_conv_bn
from ..training.flops import count_gflops, count_params
from .batch_bench import BATCH_REPS, batch_cost, batch_sentence, batch_target_line

STUDENT = "student"
BASELINES = ("lraspp_mobilenet_v3_large", "deeplabv3_resnet50")
BLOCK = 5  # repetitions per case per turn; one for cases slower than SLOW_RUN_S
SLOW_RUN_S = 0.5
TARGET_FPS = {"360x480": 100.0, "720x960": 25.0}  # student end to end
# Student end-to-end FPS over ONNX Runtime fp32's at 360x480, per OpenVINO precision.
TARGET_OVER_ONNXRUNTIME = {"fp32": 1.8, "int8": 2.5}
TARGET_GPU_SHARE = 0.9  # end-to-end FPS over model-only FPS on a GPU
TARGET_NODE_MS = 3.0  # node overhead beyond the engine at 360x480


@dataclass
class Config:
    models: tuple = (STUDENT, *BASELINES)
    sizes: tuple = ((360, 480), (720, 960))
    backends: tuple = ("torch", "onnxruntime", "openvino")
    device: str = "cpu"
    precisions: tuple = ("fp32",)  # each backend runs those it supports on the device
    reps: int = 100
    warmup: int = 10
    min_reps: int = 3
    seconds_per_case: float = 30.0  # slow baselines stop early, after at least min_reps
    num_threads: int | None = None
    checkpoint: Path | None = None
    node_sizes: tuple = ()  # frame sizes for the node overhead; empty: not measured
    cameras: int = 0  # with node_sizes: N cameras in one node against N nodes, instead of the overhead
    camera_rate: float = 15.0  # frames per second per camera
    camera_seconds: float = 30.0  # measured time per setup
    batch: int = 0  # N > 1: each student engine also on one frame against a batch of N frames
    cuda_compile: bool = EngineOptions.cuda_compile  # for every engine, baselines too


# One thread: the smoke run shares the CPU with other tests, where two OpenMP threads wait on each other.
SMOKE = Config(
    models=(STUDENT, BASELINES[0]),
    sizes=((64, 96),),
    reps=3,
    warmup=1,
    min_reps=2,
    seconds_per_case=5.0,
    num_threads=1,
)


@dataclass
class Case:
    """One model at one input size on one backend, with its measurements."""

    model: str
    size: tuple
    engine: SegmentationEngine
    frame: np.ndarray
    model_step: object = None
    model_ms: list = field(default_factory=list)
    stage_ms: dict = field(default_factory=lambda: {stage: [] for stage in STAGES})
    cpu_ms: list = field(default_factory=list)  # CPU time of all the process's threads per end-to-end frame
    seconds: float = 0.0
    warmup_s_per_run: float = 0.0

    def measure(self, count: int) -> None:
        started = time.perf_counter()
        for _ in range(count):
            begin = time.perf_counter()
            self.model_step()
            self.model_ms.append((time.perf_counter() - begin) * 1000.0)
        for _ in range(count):
            cpu_start = time.process_time()
            timings = self.engine.segment(self.frame).timings_ms
            self.cpu_ms.append((time.process_time() - cpu_start) * 1000.0)
            for stage in STAGES:
                self.stage_ms[stage].append(timings[stage])
        self.seconds += time.perf_counter() - started

    def block(self, config: Config) -> int:
        """Repetitions for this turn: one at a time for slow cases, so they stay interleaved with the rest."""
        runs = 2 * len(self.model_ms)
        seconds_per_run = self.seconds / runs if runs else self.warmup_s_per_run
        return 1 if seconds_per_run > SLOW_RUN_S else min(BLOCK, config.reps)

    def done(self, config: Config) -> bool:
        enough = len(self.model_ms) >= config.reps
        out_of_time = self.seconds >= config.seconds_per_case and len(self.model_ms) >= config.min_reps
        return enough or out_of_time


def percentiles(values) -> dict:
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}


def build_network(name: str, checkpoint=None) -> tuple[torch.nn.Module, ModelInfo]:
    """The student from its checkpoint, or a torchvision baseline with random weights and BatchNorm folded."""
    if name == STUDENT:
        return load_checkpoint(checkpoint or default_checkpoint())
    from torch.fx.experimental.optimization import fuse
    from torchvision.models import segmentation

    if name not in BASELINES:
        raise ValueError(f"unknown model {name!r}; choose from {(STUDENT, *BASELINES)}")
    network = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=11).eval()
    # The student's BatchNorm is folded by the engine; fold the baselines' too, so the comparison is fair.
    return fuse(network), ModelInfo(arch={"name": name})


def warm_up(case: Case, config: Config) -> None:
    started = time.perf_counter()
    for runs in range(1, config.warmup + 1):
        case.model_step()
        case.engine.segment(case.frame)
        case.warmup_s_per_run = (time.perf_counter() - started) / (2 * runs)
        if time.perf_counter() - started > config.seconds_per_case / 4:
            break


def make_cases(config: Config) -> tuple[list[Case], dict]:
    cases, model_facts = [], {}
    device_type = "cuda" if config.device == "cuda" else "cpu"
    for backend in config.backends:
        REGISTRY[backend].require_installed()  # before runs(), which asks the runtime what this machine runs
    for name in config.models:
        network, info = build_network(name, config.checkpoint)
        # Counted before any engine takes the network (a CUDA engine moves it to the GPU in place).
        model_facts[name] = {
            "params": count_params(network),
            "gflops": {size_key(size): count_gflops(network, size) for size in config.sizes},
        }
        # int8 runs the quantized model made for a checkpoint file: the student's only.
        variants = [
            (backend, precision)
            for backend in config.backends
            for precision in config.precisions
            if REGISTRY[backend].runs(device_type, precision) and (precision != "int8" or name == STUDENT)
        ]
        for size in config.sizes:
            frame = synthetic_frames(size, count=1)[0]
            for backend, precision in variants:
                options = EngineOptions(
                    device=config.device,
                    precision=precision,
                    backend=backend,
                    num_threads=config.num_threads or 0,
                    input_size=size,
                    cuda_compile=config.cuda_compile,
                )
                if name == STUDENT:
                    checkpoint = str(config.checkpoint or default_checkpoint())
                    engine = SegmentationEngine(options.with_changes(checkpoint=checkpoint))
                else:
                    engine = SegmentationEngine.from_model(network, info, name, options)
                case = Case(name, size, engine, frame)
                case.model_step = engine.inference_step(frame)
                cases.append(case)
    return cases, model_facts


def measure(config: Config) -> dict:
    load_before = os.getloadavg()
    cases, model_facts = make_cases(config)
    for case in cases:
        warm_up(case, config)
    while not all(case.done(config) for case in cases):
        for case in cases:
            if not case.done(config):
                case.measure(case.block(config))
    results = [summarise(case, model_facts[case.model]) for case in cases]
    add_ratios(results)
    report = {
        "environment": environment(config),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "results": results,
        "argmax_placement": argmax_placement(config),
        "batch": batch_rows(cases, config),
        "node": [],
    }
    if config.node_sizes:
        from .node_bench import measure_node_overhead  # rclpy only when the node is measured

        report["node"] = measure_node_overhead(config)
    return report


def summarise(case: Case, facts: dict) -> dict:
    model = percentiles(case.model_ms)
    stages = {stage: percentiles(values) for stage, values in case.stage_ms.items()}
    return {
        "model": case.model,
        "size": size_key(case.size),
        "backend": case.engine.backend,
        "device": str(case.engine.device),
        "precision": case.engine.precision,
        "params": facts["params"],
        "gflops": facts["gflops"][size_key(case.size)],
        "reps": len(case.model_ms),
        "model_only_ms": model,
        "model_only_fps": 1000.0 / model["p50"],
        "end_to_end_ms": stages,
        "end_to_end_fps": 1000.0 / stages["total"]["p50"],
        "end_to_end_cpu_ms": percentiles(case.cpu_ms),
    }


def add_ratios(results: list) -> None:
    """Student FPS over each baseline's at the same size, backend and precision, and over ONNX Runtime fp32's at
    the same size (end to end and model only)."""
    by_key = {(r["model"], r["size"], r["backend"], r["precision"]): r for r in results}
    for result in results:
        if result["model"] != STUDENT:
            continue
        result["speedup"] = {}
        for baseline in BASELINES:
            other = by_key.get((baseline, result["size"], result["backend"], result["precision"]))
            if other is not None:
                result["speedup"][baseline] = fps_ratios(result, other)
        onnxruntime = by_key.get((STUDENT, result["size"], "onnxruntime", "fp32"))
        if onnxruntime is not None:
            result["over_onnxruntime"] = fps_ratios(result, onnxruntime)


def fps_ratios(result: dict, other: dict) -> dict:
    return {
        "end_to_end": result["end_to_end_fps"] / other["end_to_end_fps"],
        "model_only": result["model_only_fps"] / other["model_only_fps"],
    }


def batch_rows(cases: list, config: Config) -> list:
    """``--batch N``: each student case's engine on one frame against a batch of N."""
    if config.batch < 2:
        return []
    reps = min(config.reps, BATCH_REPS)
    return [
        {
            "size": size_key(case.size),
            **batch_cost(case.engine, synthetic_frames(case.size, count=config.batch), config.warmup, reps),
        }
        for case in cases
        if case.model == STUDENT
    ]


def argmax_placement(config: Config) -> list:
    """ONNX Runtime model-only latency with the argmax in the graph versus logits out and numpy's argmax."""
    if "onnxruntime" not in config.backends or config.device == "cuda" or STUDENT not in config.models:
        return []
    network, _ = build_network(STUDENT, config.checkpoint)
    network = fuse_conv_bn(network)
    threads = config.num_threads or torch.get_num_threads()
    rows = []
    for size in config.sizes:
        batch = np.zeros((1, 3, *size), np.float32)
        inside = OnnxRuntimeRunner(onnx_bytes(network, size, with_argmax=True), threads)
        outside = OnnxRuntimeRunner(onnx_bytes(network, size, with_argmax=False), threads)
        variants = {
            "argmax_inside": lambda runner=inside, batch=batch: runner.run(batch),
            "argmax_outside": lambda runner=outside, batch=batch: runner.run(batch).argmax(axis=1).astype(np.uint8),
        }
        times = {name: [] for name in variants}
        for _ in range(config.warmup):
            for run in variants.values():
                run()
        for _ in range(max(config.min_reps, config.reps // 2)):
            for name, run in variants.items():
                begin = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - begin) * 1000.0)
        rows.append({"size": size_key(size), **{name: percentiles(values) for name, values in times.items()}})
    return rows


def installed_version(package: str) -> str:
    """The package's version, or "none": the GPU machine has no OpenVINO."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def environment(config: Config) -> dict:
    return {
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": installed_version("onnxruntime"),
        "openvino": installed_version("openvino"),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if config.device != "cpu" and torch.cuda.is_available() else None,
        "reps_target": config.reps,
        "warmup": config.warmup,
        "seconds_per_case": config.seconds_per_case,
        "camera_seconds": config.camera_seconds,
        "cuda_compile": config.cuda_compile,
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def size_key(size) -> str:
    return f"{size[0]}x{size[1]}"


def parse_size(text: str) -> tuple:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, e.g. 360x480, got {text!r}") from None
    if min(height, width) < 32:
        raise argparse.ArgumentTypeError(f"size must be at least 32x32, got {text!r}")
    return height, width


# --- the report -----------------------------------------------------------------------------------------------------


def markdown(report: dict, command: str) -> str:
    env = report["environment"]
    lines = [
        "# Engine benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {env['cpu']} ({env['cpu_count']} cores), torch threads {env['torch_threads']}, "
        f"GPU {env['gpu'] or 'none'}; torch {env['torch']}, onnxruntime {env['onnxruntime']}, "
        f"openvino {env.get('openvino', 'none')}, Python {env['python']}.",
        f"Load average (1, 5, 15 min) before: {fmt_load(report['load_average_before'])}, "
        f"after: {fmt_load(report['load_average_after'])}.",
        f"Warm-up {env['warmup']} runs, then up to {env['reps_target']} repetitions per case "
        f"(fewer for cases over {env['seconds_per_case']:.0f} s; see reps), cases interleaved.",
        "FPS = 1000 / p50 latency. Model only = forward and argmax on a prepared batch; end to end = "
        "`SegmentationEngine.segment` on a uint8 frame of the same size (stages as the engine reports them).",
        "E2e CPU ms: CPU time of all the process's threads per end-to-end frame (time.process_time), which machine "
        "load does not stretch; with one thread it approximates the latency on an idle core.",
        "GFLOPs count 2 FLOPs per multiply-add (torch.utils.flop_counter); GMACs are half.",
        "",
        "| model | backend | precision | size | GFLOPs | params (M) | reps | model p50 / p95 ms | model FPS "
        "| preprocess p50 | inference p50 | postprocess p50 | e2e p50 / p95 ms | e2e FPS | e2e CPU ms p50 |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        stages = r["end_to_end_ms"]
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['precision']} | {r['size']} | {r['gflops']:.3g} "
            f"| {r['params'] / 1e6:.2f} "
            f"| {r['reps']} | {r['model_only_ms']['p50']:.1f} / {r['model_only_ms']['p95']:.1f} "
            f"| {r['model_only_fps']:.1f} | {stages['preprocess']['p50']:.2f} | {stages['inference']['p50']:.1f} "
            f"| {stages['postprocess']['p50']:.2f} | {stages['total']['p50']:.1f} / {stages['total']['p95']:.1f} "
            f"| {r['end_to_end_fps']:.1f} | {r['end_to_end_cpu_ms']['p50']:.1f} |"
        )
    lines += ["", "## Student speed-up over the baselines (same size, backend and precision, same run)", ""]
    lines += ["| size | backend | precision | baseline | end to end | model only |", "|---|---|---|---|---:|---:|"]
    for r in report["results"]:
        for baseline, ratio in r.get("speedup", {}).items():
            lines.append(
                f"| {r['size']} | {r['backend']} | {r['precision']} | {baseline} "
                f"| {ratio['end_to_end']:.1f}x | {ratio['model_only']:.1f}x |"
            )
    students = [r for r in report["results"] if "over_onnxruntime" in r]
    if students:
        lines += ["", "## Student: each backend and precision over ONNX Runtime fp32 (same size, same run)", ""]
        lines += ["| size | backend | precision | end to end | model only |", "|---|---|---|---:|---:|"]
        for r in students:
            ratio = r["over_onnxruntime"]
            lines.append(
                f"| {r['size']} | {r['backend']} | {r['precision']} "
                f"| {ratio['end_to_end']:.2f}x | {ratio['model_only']:.2f}x |"
            )
    if report["argmax_placement"]:
        lines += ["", "## ONNX Runtime: argmax inside the graph or outside (student, model only, ms)", ""]
        lines += ["| size | inside p50 / p95 | outside (logits + numpy argmax) p50 / p95 |", "|---|---:|---:|"]
        for row in report["argmax_placement"]:
            inside, outside = row["argmax_inside"], row["argmax_outside"]
            lines.append(
                f"| {row['size']} | {inside['p50']:.1f} / {inside['p95']:.1f} "
                f"| {outside['p50']:.1f} / {outside['p95']:.1f} |"
            )
    if report.get("batch"):
        lines += ["", "## Student: one frame against a batch (same engine, same run)", ""]
        lines += [f"- {row['size']}: {batch_sentence(row)}" for row in report["batch"]]
    if report["node"]:
        from .node_bench import node_markdown

        lines += node_markdown(report["node"])
    lines += target_lines(report)
    return "\n".join(lines) + "\n"


def target_lines(report: dict) -> list:
    """The issue's targets, met or missed by how much, from this run's numbers."""
    lines = ["", "## Targets", ""]
    for size, target in TARGET_FPS.items():
        student = [r for r in report["results"] if r["model"] == STUDENT and r["size"] == size]
        if student:
            lines.append(fps_target_line(max(student, key=lambda r: r["end_to_end_fps"]), target))
    for result in report["results"]:
        target = TARGET_OVER_ONNXRUNTIME.get(result["precision"])
        if result["backend"] == "openvino" and result["size"] == "360x480" and target and "over_onnxruntime" in result:
            ratio = result["over_onnxruntime"]["end_to_end"]
            lines.append(
                f"- OpenVINO {result['precision']} end to end >= {target}x ONNX Runtime fp32 at 360x480: "
                f"{ratio:.2f}x, {'met' if ratio >= target else 'missed'}."
            )
    for row in report.get("batch", []):
        if row["device"].startswith("cuda"):
            lines.append(batch_target_line(row, row["size"]))
    for row in report["node"]:
        if row["size"] == "360x480":
            overhead = row["overhead"]["p50"]
            verdict = "met" if overhead <= TARGET_NODE_MS else f"missed by {overhead - TARGET_NODE_MS:.2f} ms"
            lines.append(f"- Node overhead at 360x480 <= {TARGET_NODE_MS} ms: {overhead:.2f} ms p50, {verdict}.")
    return lines


def fps_target_line(best: dict, target: float) -> str:
    """The fastest student case at one size against its end-to-end FPS target (and the GPU share on CUDA)."""
    stages = {stage: best["end_to_end_ms"][stage]["p50"] for stage in STAGES[:3]}
    dominant = max(stages, key=stages.get)
    fps = best["end_to_end_fps"]
    verdict = "met" if fps >= target else f"missed by {target - fps:.1f} FPS"
    ratio = best.get("speedup", {}).get(BASELINES[0], {}).get("end_to_end")
    line = (
        f"- Student end to end at {best['size']} >= {target:g} FPS on {best['device']}: {fps:.1f} FPS "
        f"({best['backend']} {best['precision']}), {verdict}; largest stage {dominant} ({stages[dominant]:.1f} ms p50)"
        + (f"; {ratio:.1f}x LR-ASPP MobileNetV3-Large's end-to-end FPS." if ratio else ".")
    )
    if best["device"].startswith("cuda"):
        share = best["end_to_end_fps"] / best["model_only_fps"]
        verdict = "met" if share >= TARGET_GPU_SHARE else "missed"
        line += f"\n- GPU end-to-end FPS >= {TARGET_GPU_SHARE:.0%} of model-only: {share:.0%}, {verdict}."
    return line


def fmt_load(load) -> str:
    return ", ".join(f"{value:.2f}" for value in load)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="road-seg-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny configuration that runs in seconds (for tests)")
    parser.add_argument("--models", nargs="+", choices=(STUDENT, *BASELINES), help="default: student and baselines")
    parser.add_argument("--checkpoint", type=Path, help="student checkpoint (default: the shipped one)")
    parser.add_argument("--sizes", nargs="+", type=parse_size, help="input sizes HEIGHTxWIDTH (360x480 720x960)")
    parser.add_argument("--backends", nargs="+", choices=tuple(REGISTRY), help="default: all installed on CPU")
    parser.add_argument("--device", default="cpu", choices=DEVICES[1:])
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS[1:],
        help="default: fp32 (fp16 on cuda); each backend runs those it supports, int8 the student only",
    )
    parser.add_argument("--reps", type=whole_number(1), help="repetitions per case (default 100)")
    parser.add_argument("--warmup", type=whole_number(0), help="warm-up runs per case (default 10)")
    parser.add_argument("--seconds-per-case", type=positive_number, help="time budget per case (default 30)")
    parser.add_argument("--threads", type=whole_number(*THREAD_LIMITS), help="CPU threads (default: torch's)")
    parser.add_argument(
        "--node", nargs="*", type=parse_size, metavar="HxW", help="also the node's overhead at these frame sizes"
    )
    parser.add_argument(
        "--cameras",
        type=whole_number(1),
        metavar="N",
        help="with --node (default size 480x640): N cameras in one node against N separate nodes, nothing else",
    )
    parser.add_argument(
        "--rate", type=positive_number, default=15.0, help="with --cameras: frames per second per camera"
    )
    parser.add_argument(
        "--duration", type=positive_number, default=30.0, help="with --cameras: seconds measured per setup"
    )
    parser.add_argument(
        "--batch", type=whole_number(1), metavar="N", help="also each student engine on one frame against a batch of N"
    )
    parser.add_argument(
        "--cuda-compile",
        action=argparse.BooleanOptionalAction,
        default=Config.cuda_compile,
        help="torch.compile every network that runs on CUDA (default: EngineOptions')",
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    parser.add_argument("--markdown", type=Path, help="write the report as Markdown (default: print it)")
    return parser.parse_args(argv)


def config_from_args(args) -> Config:
    config = SMOKE if args.smoke else Config()
    overrides = {
        "models": tuple(args.models) if args.models else None,
        "checkpoint": args.checkpoint,
        "sizes": tuple(args.sizes) if args.sizes else None,
        "backends": tuple(args.backends) if args.backends else default_backends(args.device),
        "device": args.device,
        "precisions": tuple(args.precisions or (("fp16",) if args.device == "cuda" else ("fp32",))),
        "reps": args.reps,
        "warmup": args.warmup,
        "seconds_per_case": args.seconds_per_case,
        "num_threads": args.threads,
        "node_sizes": None if args.node is None else tuple(args.node or default_node_sizes(args.cameras)),
        "cameras": args.cameras,
        "camera_rate": args.rate,
        "camera_seconds": args.duration,
        "batch": args.batch,
        "cuda_compile": args.cuda_compile,
    }
    return Config(**{**config.__dict__, **{key: value for key, value in overrides.items() if value is not None}})


def default_backends(device: str) -> tuple:
    """PyTorch on CUDA; on the CPU, every backend whose Python package this machine has."""
    if device == "cuda":
        return ("torch",)
    return tuple(name for name, backend in REGISTRY.items() if backend.installed())


def default_node_sizes(cameras) -> tuple:
    return ((480, 640),) if cameras else ((360, 480), (720, 1280))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.cameras and args.node is None:
        print("road-seg-bench: --cameras needs --node (the cameras are measured through the node)", file=sys.stderr)
        return 2
    config = config_from_args(args)
    if config.cameras:
        from . import cameras_bench as chosen  # rclpy only when the node is measured
    try:
        report = chosen.measure_report(config) if config.cameras else measure(config)
    except (CheckpointError, EngineError, RuntimeError) as error:  # NodeBenchError is a RuntimeError
        print(f"road-seg-bench: {error}", file=sys.stderr)
        return 1
    command = " ".join(["road-seg-bench", *argv])
    text = chosen.report_markdown(report, command) if config.cameras else markdown(report, command)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
