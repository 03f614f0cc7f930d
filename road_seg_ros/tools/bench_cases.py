"""What road-seg-bench measures: its settings (BenchConfig) and one model at one size on one backend (BenchCase)."""

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.backends import REGISTRY
from ..core.checkpoint import ModelInfo, load_checkpoint
from ..core.engine import SegmentationEngine
from ..core.frames import synthetic_frames
from ..core.options import EngineOptions, default_checkpoint
from ..core.result import STAGES
from ..training.flops import count_gflops, count_params
from .bench_environment import size_key

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
class BenchConfig:
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
SMOKE = BenchConfig(
    models=(STUDENT, BASELINES[0]),
    sizes=((64, 96),),
    reps=3,
    warmup=1,
    min_reps=2,
    seconds_per_case=5.0,
    num_threads=1,
)


@dataclass
class BenchCase:
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

    def block(self, config: BenchConfig) -> int:
        """Repetitions for this turn: one at a time for slow cases, so they stay interleaved with the rest."""
        runs = 2 * len(self.model_ms)
        seconds_per_run = self.seconds / runs if runs else self.warmup_s_per_run
        return 1 if seconds_per_run > SLOW_RUN_S else min(BLOCK, config.reps)

    def done(self, config: BenchConfig) -> bool:
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


def warm_up(case: BenchCase, config: BenchConfig) -> None:
    started = time.perf_counter()
    for runs in range(1, config.warmup + 1):
        case.model_step()
        case.engine.segment(case.frame)
        case.warmup_s_per_run = (time.perf_counter() - started) / (2 * runs)
        if time.perf_counter() - started > config.seconds_per_case / 4:
            break


def make_cases(config: BenchConfig) -> tuple[list[BenchCase], dict]:
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
                case = BenchCase(name, size, engine, frame)
                case.model_step = engine.inference_step(frame)
                cases.append(case)
    return cases, model_facts
