"""The OpenVINO backend: PyTorch's labels on CamVid frames, batches, a cache that rebuilds what is corrupt, and the
choice "auto" makes for backend and precision."""

import logging
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import camvid_drive_frames

from road_seg_ros.core import backends
from road_seg_ros.core.backends import REGISTRY, resolve_backend, resolve_precision
from road_seg_ros.core.engine import SegmentationEngine
from road_seg_ros.core.frames import synthetic_frames
from road_seg_ros.core.openvino_backend import CACHE_FOLDER, CACHE_MAGIC, cpu_runs
from road_seg_ros.core.options import EngineError, EngineOptions

CPU = torch.device("cpu")
FP32_AGREEMENT = 0.999  # the bar: fp32 OpenVINO labels equal PyTorch's on >= 99.9% of pixels
BF16_AGREEMENT = 0.99  # bfloat16 moves labels where two classes are close (99.87% equal on 10 CamVid val frames)
needs_bf16 = pytest.mark.skipif(not cpu_runs("bf16"), reason="this CPU has no bfloat16 instructions")


def engine(checkpoint=None, **options):
    options = {"device": "cpu", "num_threads": 1, "checkpoint": str(checkpoint or ""), **options}
    return SegmentationEngine(EngineOptions(**options))


@pytest.fixture(scope="module")
def camvid_frames():
    """The first four frames of a CamVid test drive (360x480, the student's input size)."""
    return [rgb for rgb, _ in camvid_drive_frames("0001TP", 4)]


@pytest.fixture(scope="module")
def torch_student():
    return engine(backend="torch")


@pytest.fixture
def own_checkpoint(tiny_checkpoint, tmp_path):
    """The tiny checkpoint in a folder of its own, so its compiled-model cache starts empty."""
    return Path(shutil.copy(tiny_checkpoint, tmp_path / "tiny.safetensors"))


def agreement(first, second) -> float:
    assert first.shape == second.shape and first.dtype == second.dtype == np.uint8
    return float((first == second).mean())


def test_fp32_gives_the_torch_labels_on_camvid_frames(torch_student, camvid_frames):
    """The shipped student, frames at the input size and resized (a larger frame: the resize path)."""
    openvino = engine(backend="openvino", precision="fp32")
    assert (openvino.backend, openvino.precision) == ("openvino", "fp32")
    larger = [np.ascontiguousarray(np.kron(camvid_frames[0], np.ones((2, 2, 1), np.uint8)))]  # 720x960
    for frame in camvid_frames + larger:
        expected = torch_student.segment(frame).labels
        result = openvino.segment(frame, with_color=True, with_overlay=True)
        assert agreement(result.labels, expected) >= FP32_AGREEMENT
        np.testing.assert_array_equal(result.color, openvino.colorize(result.labels))
        np.testing.assert_array_equal(result.overlay, openvino.overlay(frame, result.labels))


@needs_bf16
def test_bf16_stays_close_to_the_torch_labels(torch_student, camvid_frames):
    bf16 = engine(backend="openvino", precision="bf16")
    for frame in camvid_frames:
        assert agreement(bf16.segment(frame).labels, torch_student.segment(frame).labels) >= BF16_AGREEMENT


def test_runner_takes_a_batch_of_frames(own_checkpoint):
    """N frames in one call (several cameras through one engine) give each frame's own labels."""
    single = engine(own_checkpoint, backend="openvino", precision="fp32")
    frames = synthetic_frames(single.input_size, count=3, seed=5)
    batch = single._pipeline.runner(np.stack(frames))
    assert batch.shape == (3, *single.input_size) and batch.dtype == np.uint8
    for frame, labels in zip(frames, batch):
        np.testing.assert_array_equal(labels, single.segment(frame).labels)


def cache_files(checkpoint):
    return sorted((checkpoint.parent / CACHE_FOLDER).glob("*.blob"))


def test_compiled_model_is_cached_beside_the_checkpoint_and_reused(own_checkpoint):
    first = engine(own_checkpoint, backend="openvino", precision="fp32")
    (cached,) = cache_files(own_checkpoint)
    assert cached.read_bytes().startswith(CACHE_MAGIC)
    written = cached.stat().st_mtime_ns
    frame = synthetic_frames(first.input_size, count=1, seed=3)[0]
    second = engine(own_checkpoint, backend="openvino", precision="fp32")
    assert cached.stat().st_mtime_ns == written  # imported, not compiled and written again
    np.testing.assert_array_equal(second.segment(frame).labels, first.segment(frame).labels)


@pytest.mark.parametrize("damage", ["flipped bytes", "truncated", "empty"])
def test_corrupt_cache_file_is_rebuilt_not_trusted(own_checkpoint, damage, caplog):
    """OpenVINO itself imports a blob with flipped bytes and then computes wrong labels; ours must not."""
    reference = engine(own_checkpoint, backend="openvino", precision="fp32")
    (cached,) = cache_files(own_checkpoint)
    good = cached.read_bytes()
    data = bytearray(good)
    if damage == "flipped bytes":
        middle = len(data) // 2
        data[middle : middle + 4000] = bytes(value ^ 0xFF for value in data[middle : middle + 4000])
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data = bytearray()
    cached.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="road_seg_ros.core.openvino_backend"):
        rebuilt = engine(own_checkpoint, backend="openvino", precision="fp32")
    frames = synthetic_frames(reference.input_size, count=3, seed=11)
    for frame in frames:
        np.testing.assert_array_equal(rebuilt.segment(frame).labels, reference.segment(frame).labels)
    assert "rebuilding" in caplog.text
    (rewritten,) = cache_files(own_checkpoint)
    assert rewritten.read_bytes() != bytes(data) and rewritten.read_bytes().startswith(CACHE_MAGIC)


def test_int8_without_a_quantized_model_is_refused_in_one_line(own_checkpoint):
    with pytest.raises(EngineError, match="no int8 model .* make it with: road-seg-export --format openvino") as error:
        engine(own_checkpoint, backend="openvino", precision="int8")
    assert "\n" not in str(error.value)


# --------------------------------------------------------------------------- what "auto" chooses


@pytest.mark.skipif(platform.machine() not in backends.X86_64, reason="auto picks OpenVINO on x86-64 only")
def test_auto_on_an_x86_cpu_is_openvino_at_its_fastest_accurate_precision(own_checkpoint):
    chosen = engine(own_checkpoint)
    assert chosen.backend == "openvino"
    assert chosen.precision == ("bf16" if cpu_runs("bf16") else "fp32")
    for precision in ("fp32", "bf16", "int8"):
        assert resolve_backend("auto", CPU, precision).name == "openvino"


def test_auto_elsewhere_is_onnxruntime(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert resolve_backend("auto", CPU, "auto").name == "onnxruntime"
    assert resolve_backend("auto", CPU, "fp32").name == "onnxruntime"
    assert resolve_backend("openvino", CPU, "fp32").name == "openvino"  # still there when asked for by name


def test_auto_precision_per_backend():
    assert resolve_precision("auto", REGISTRY["onnxruntime"], CPU) == "fp32"
    assert resolve_precision("auto", REGISTRY["torch"], CPU) == "fp32"
    assert resolve_precision("auto", REGISTRY["torch"], torch.device("cuda")) == "fp32"
    assert resolve_precision("int8", REGISTRY["openvino"], CPU) == "int8"


@pytest.mark.parametrize(
    ("backend", "precision", "device", "message"),
    [
        ("torch", "int8", "cpu", "precision 'int8' runs with openvino on cpu only, not with torch on cpu"),
        ("onnxruntime", "bf16", "cpu", "precision 'bf16' runs with openvino on cpu only, not with onnxruntime"),
        ("openvino", "fp16", "cpu", "precision 'fp16' runs with torch on cuda only"),
        ("openvino", "int8", "cuda", "backend 'openvino' runs on cpu only"),
    ],
)
def test_unsupported_precisions_are_refused_in_one_line(backend, precision, device, message):
    with pytest.raises(EngineError, match=message) as error:
        resolve_backend(backend, torch.device(device), precision)
    assert "\n" not in str(error.value)
