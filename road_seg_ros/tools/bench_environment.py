"""road-seg-bench's machine description and frame-size helpers."""

import importlib.metadata
import os
import platform
from pathlib import Path

import torch


def installed_version(package: str) -> str:
    """The package's version, or "none": the GPU machine has no OpenVINO."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def environment(config) -> dict:
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
