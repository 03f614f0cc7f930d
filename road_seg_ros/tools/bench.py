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
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..core.backends import REGISTRY, OnnxRuntimeRunner, onnx_bytes
from ..core.checkpoint import CheckpointError
from ..core.cli import parse_size, positive_number, whole_number
from ..core.frames import synthetic_frames
from ..core.options import DEVICES, PRECISIONS, THREAD_LIMITS, EngineError
from ..models import fuse_conv_bn
from .batch_bench import BATCH_REPS, batch_cost
from .bench_cases import (
    BASELINES,
    SMOKE,
    STUDENT,
    BenchCase,
    BenchConfig,
    build_network,
    make_cases,
    percentiles,
    warm_up,
)
from .bench_environment import environment, size_key
from .bench_report import markdown


def measure(config: BenchConfig) -> dict:
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


def summarise(case: BenchCase, facts: dict) -> dict:
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


def batch_rows(cases: list, config: BenchConfig) -> list:
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


def argmax_placement(config: BenchConfig) -> list:
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
        default=BenchConfig.cuda_compile,
        help="torch.compile every network that runs on CUDA (default: EngineOptions')",
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    parser.add_argument("--markdown", type=Path, help="write the report as Markdown (default: print it)")
    return parser.parse_args(argv)


def config_from_args(args) -> BenchConfig:
    config = SMOKE if args.smoke else BenchConfig()
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
    return BenchConfig(**{**config.__dict__, **{key: value for key, value in overrides.items() if value is not None}})


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
        from . import cameras_bench  # rclpy only when the node is measured
    try:
        report = cameras_bench.measure_report(config) if config.cameras else measure(config)
    except (CheckpointError, EngineError, RuntimeError) as error:  # NodeBenchError is a RuntimeError
        print(f"road-seg-bench: {error}", file=sys.stderr)
        return 1
    command = " ".join(["road-seg-bench", *argv])
    text = cameras_bench.report_markdown(report, command) if config.cameras else markdown(report, command)
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
