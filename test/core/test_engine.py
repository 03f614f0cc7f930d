"""The engine: every backend, precision and device path gives the fp32 PyTorch labels, and the extras are right."""

import cv2
import numpy as np
import pytest
import torch

from road_seg_ros.core.backends import REGISTRY, TorchDeviceRunner
from road_seg_ros.core.checkpoint import load_checkpoint
from road_seg_ros.core.device_pipeline import DevicePipeline, FrameGeometry, frame_to_batch, nearest_indices
from road_seg_ros.core.engine import MAX_INPUT_SIZES, SegmentationEngine
from road_seg_ros.core.frames import synthetic_frames
from road_seg_ros.core.openvino_backend import CompiledModelCache, cpu_runs
from road_seg_ros.core.options import EngineError, EngineOptions, default_checkpoint
from road_seg_ros.core.preprocess import Normalize, input_size_for
from road_seg_ros.models import ShiftedDepthwise

INPUT_SIZE = (96, 128)  # height, width: small, so each frame takes milliseconds
MIN_AGREEMENT = 0.995
# Frame sizes: the input size itself, integer and fractional shrinks, and a wider aspect (1280x720-like).
SHRINK_SIZES = [INPUT_SIZE, (192, 256), (101, 139), (144, 256)]
WIDE_INPUT_SIZE = (96, 160)  # what a 16:9 frame runs at with keep_aspect: INPUT_SIZE's height, its own aspect
GROW_SIZES = [(64, 96), (80, 100)]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def engine(**options):
    return SegmentationEngine(EngineOptions(**{"device": "cpu", "input_size": INPUT_SIZE, "num_threads": 1, **options}))


@pytest.fixture(scope="module")
def reference():
    return engine(backend="torch")


@pytest.fixture(scope="module")
def stretched():
    """The reference with every frame stretched to INPUT_SIZE, as a pipeline built for that one size runs it."""
    return engine(backend="torch", keep_aspect=False)


@pytest.fixture(scope="module")
def onnx_engine():
    return engine(backend="onnxruntime")


def frames(sizes, seed=1):
    return [synthetic_frames(size, count=1, seed=seed + index)[0] for index, size in enumerate(sizes)]


def agreement(first: np.ndarray, second: np.ndarray) -> float:
    assert first.shape == second.shape and first.dtype == second.dtype == np.uint8
    return float((first == second).mean())


# Every CPU runtime and precision: each runs a batch of N in one call (ONNX Runtime: a graph with a dynamic batch;
# OpenVINO: compiled per N on first use).
CPU_RUNTIMES = [
    ("torch", "fp32"),
    ("onnxruntime", "fp32"),
    ("openvino", "fp32"),
    pytest.param(
        "openvino",
        "bf16",  # asked only where OpenVINO is installed: the GPU machine collects this module without it
        marks=pytest.mark.skipif(
            not (REGISTRY["openvino"].installed() and cpu_runs("bf16")), reason="no OpenVINO, or no bfloat16 CPU"
        ),
    ),
]


class CountingRunner:
    """A runner that counts its calls, the frames in each and their size."""

    def __init__(self, runner):
        self.runner, self.batches, self.sizes = runner, [], []  # frames in each call, and their height x width

    def __getattr__(self, name):  # layout, on_device, device, dtype: the runner's
        return getattr(self.runner, name)

    def __call__(self, batch):
        self.batches.append(len(batch))
        height_axis = 2 if self.runner.layout == "nchw" else 1
        self.sizes.append(tuple(batch.shape[height_axis : height_axis + 2]))
        return self.runner(batch)


@pytest.mark.parametrize(("backend", "precision"), CPU_RUNTIMES)
def test_a_batch_equals_one_call_per_frame_pixel_for_pixel(backend, precision):
    chosen = engine(backend=backend, precision=precision, keep_aspect=False)  # every frame stretched: one batch
    batch_frames = frames(SHRINK_SIZES + GROW_SIZES[:1], seed=11)  # five sizes, the input size among them
    singles = [chosen.segment(frame, with_color=True, with_overlay=True, overlay_alpha=0.3) for frame in batch_frames]
    assert len({result.labels.tobytes() for result in singles}) == len(singles)  # distinct frames, distinct labels
    counting = chosen._pipeline.runner = CountingRunner(chosen._pipeline.runner)
    for count in (len(batch_frames), 2):
        with_color = [index % 2 == 0 for index in range(count)]  # asked for per frame
        results = chosen.segment_batch(batch_frames[:count], with_color, with_overlay=True, overlay_alpha=0.3)
        assert counting.batches[-1] == count  # one forward pass for the whole batch
        for single, result, color in zip(singles, results, with_color):
            np.testing.assert_array_equal(result.labels, single.labels)
            np.testing.assert_array_equal(result.overlay, single.overlay)
            assert (result.color is not None) == color
            if color:
                np.testing.assert_array_equal(result.color, single.color)
        assert results[0].timings_ms == results[-1].timings_ms  # the batch's stage times, each frame waited for


@pytest.mark.parametrize(
    ("frame_size", "expected"),
    [
        ((720, 960), (360, 480)),  # the model's own aspect (CamVid): its input size exactly
        ((720, 1280), (360, 640)),  # 16:9
        ((1080, 1920), (360, 640)),
        ((800, 1280), (360, 576)),  # 16:10
        ((1920, 1080), (360, 192)),  # portrait
        ((270, 480), (360, 640)),  # CamVid's middle 270 rows
        ((1, 4096), (360, 1920)),  # at most 4x the model's width
        ((4096, 1), (360, 128)),  # at least a quarter of it
    ],
)
def test_input_size_keeps_the_frames_aspect_in_steps_of_the_stride(frame_size, expected):
    assert input_size_for(frame_size, (360, 480)) == expected
    assert input_size_for(frame_size, (360, 480), keep_aspect=False) == (360, 480)


def test_tiny_input_sizes_stay_at_least_the_minimum_side():
    assert input_size_for((4096, 1), (40, 40)) == (40, 40)
    assert input_size_for((9, 16), (32, 32)) == (32, 64)


def test_a_16_9_frame_runs_at_its_own_aspect_and_its_labels_come_back_at_frame_size(reference):
    frame = frames([(144, 256)])[0]
    assert reference.input_size_for(frame.shape[:2]) == WIDE_INPUT_SIZE
    assert tuple(reference.preprocess(frame).shape) == (1, 3, *WIDE_INPUT_SIZE)
    kept = reference.segment(frame, with_color=True, with_overlay=True)
    assert kept.labels.shape == frame.shape[:2] and kept.overlay.shape == frame.shape
    # the same as a model whose input size is the frame's aspect, and not what the stretched input gives
    at_wide = engine(backend="torch", input_size=WIDE_INPUT_SIZE, keep_aspect=False).segment(frame).labels
    np.testing.assert_array_equal(kept.labels, at_wide)
    stretched = engine(backend="torch", keep_aspect=False)
    assert stretched.input_size_for(frame.shape[:2]) == INPUT_SIZE
    assert not np.array_equal(stretched.segment(frame).labels, kept.labels)


@pytest.mark.parametrize(("backend", "precision"), CPU_RUNTIMES)
def test_a_batch_runs_each_aspect_as_a_batch_of_its_own(backend, precision):
    chosen = engine(backend=backend, precision=precision)
    batch_frames = frames([INPUT_SIZE, (144, 256), (192, 256), (108, 192)], seed=21)  # 4:3, 16:9, 4:3, 16:9
    singles = [chosen.segment(frame, with_color=True) for frame in batch_frames]
    assert len(chosen._pipelines) == 2
    counting = {}
    for pipeline in chosen._pipelines.values():  # one runner per input size, or PyTorch's one for all
        pipeline.runner = counting.setdefault(id(pipeline.runner), CountingRunner(pipeline.runner))
    results = chosen.segment_batch(batch_frames, with_color=True)
    calls = sorted(size + (count,) for runner in counting.values() for size, count in zip(runner.sizes, runner.batches))
    assert calls == [(*INPUT_SIZE, 2), (*WIDE_INPUT_SIZE, 2)]  # two frames each: one forward pass per input size
    for single, result, frame in zip(singles, results, batch_frames):
        assert result.labels.shape == frame.shape[:2]
        np.testing.assert_array_equal(result.labels, single.labels)
        np.testing.assert_array_equal(result.color, single.color)
    assert results[0].timings_ms == results[2].timings_ms != results[1].timings_ms == results[3].timings_ms


@pytest.mark.skipif(not REGISTRY["openvino"].installed(), reason="no OpenVINO")
def test_openvino_compiles_each_input_size_and_batch_once(monkeypatch):
    compiled = []
    compile_for_real = CompiledModelCache.compile

    def counting(self, core, model, config, key):
        compiled.append(tuple(model.input(0).get_partial_shape().to_shape()))
        return compile_for_real(self, core, model, config, key)

    monkeypatch.setattr(CompiledModelCache, "compile", counting)
    chosen = engine(backend="openvino", precision="fp32")
    assert compiled == [(1, *INPUT_SIZE, 3)]  # at start-up
    wide, square = frames([(144, 256), (108, 192)], seed=3), frames([(192, 256)], seed=4)[0]
    for _ in range(3):
        chosen.segment(wide[0])
        chosen.segment(square)
        chosen.segment_batch(wide)
    assert compiled == [(1, *INPUT_SIZE, 3), (1, *WIDE_INPUT_SIZE, 3), (2, *WIDE_INPUT_SIZE, 3)]


def test_a_stream_of_new_aspects_keeps_a_bounded_number_of_pipelines():
    chosen = engine(backend="torch")
    widths = [32 * step for step in range(1, MAX_INPUT_SIZES + 4)]  # each its own input size
    for width in widths:
        assert chosen.segment(np.zeros((INPUT_SIZE[0], width, 3), np.uint8)).labels.shape == (INPUT_SIZE[0], width)
    assert len(chosen._pipelines) == MAX_INPUT_SIZES
    assert INPUT_SIZE in chosen._pipelines and (INPUT_SIZE[0], widths[-1]) in chosen._pipelines


def test_keep_aspect_is_an_engine_option_from_the_node_parameter():
    assert EngineOptions().keep_aspect is True
    assert EngineOptions.from_parameters({"keep_aspect": False}).keep_aspect is False


def test_device_pipeline_on_cpu_batches_like_it_runs_one_frame(reference):
    """The GPU path's eager batch, run on the CPU: each frame as its one-frame (graphed on CUDA) path gives it."""
    info = reference.info
    runner = CountingRunner(TorchDeviceRunner(reference.model, torch.device("cpu"), torch.float32))
    pipeline = DevicePipeline(runner, INPUT_SIZE, info.mean, info.std, reference.color_table)
    batch_frames = frames(SHRINK_SIZES + [SHRINK_SIZES[1]], seed=12)  # two frames of one size: no shared buffer
    batch_frames[2] = batch_frames[2][..., ::-1]  # BGR made RGB by a view: negative strides
    batch_frames[3].flags.writeable = False  # a message's buffer
    singles = [pipeline.run(frame, True, True, 0.4) for frame in batch_frames]
    results = pipeline.run_batch(batch_frames, [True] * 5, [False, True, True, True, True], 0.4)
    assert runner.batches[-1] == len(batch_frames)
    for single, result in zip(singles[1:], results[1:]):
        np.testing.assert_array_equal(result.labels, single.labels)
        np.testing.assert_array_equal(result.color, single.color)
        np.testing.assert_array_equal(result.overlay, single.overlay)
    assert results[0].overlay is None and set(results[0].timings_ms) == {
        "preprocess",
        "inference",
        "postprocess",
        "total",
    }


def test_segment_batch_checks_its_arguments(reference):
    assert reference.segment_batch([]) == []
    with pytest.raises(ValueError, match="with_color needs one flag per frame: 2, got 1"):
        reference.segment_batch(frames([INPUT_SIZE, INPUT_SIZE]), with_color=[True])
    with pytest.raises(ValueError, match="uint8"):
        reference.segment_batch([frames([INPUT_SIZE])[0], np.zeros((10, 10, 3), np.float32)])


def test_onnxruntime_gives_the_torch_labels(reference, onnx_engine):
    for frame in frames(SHRINK_SIZES + GROW_SIZES):
        assert agreement(onnx_engine.segment(frame).labels, reference.segment(frame).labels) >= MIN_AGREEMENT


def test_device_pipeline_on_cpu_gives_the_host_labels_colours_and_overlay(reference, stretched):
    """The GPU path's code, run eagerly on the CPU: same labels, and colours and overlay consistent with them."""
    info = reference.info
    runner = TorchDeviceRunner(reference.model, torch.device("cpu"), torch.float32)
    pipeline = DevicePipeline(runner, INPUT_SIZE, info.mean, info.std, reference.color_table)
    for frame in frames(SHRINK_SIZES):
        result = pipeline.run(frame, with_color=True, with_overlay=True, alpha=0.4)
        assert agreement(result.labels, stretched.segment(frame).labels) >= MIN_AGREEMENT
        np.testing.assert_array_equal(result.color, reference.colorize(result.labels))
        np.testing.assert_array_equal(result.overlay, reference.overlay(frame, result.labels, alpha=0.4))
        assert set(result.timings_ms) == {"preprocess", "inference", "postprocess", "total"}


def eager_compile(calls, compiled_modules):
    """torch.compile with its eager backend (dynamo traces the network; no C or Triton compiler runs, so the test
    takes seconds), counting the compiled calls and keeping the modules it was given."""
    compile_for_real = torch.compile

    def compile(net, **options):
        compiled_modules.extend(net.modules())
        compiled = compile_for_real(net, backend="eager", **options)

        def call(batch):
            calls.append(tuple(batch.shape))
            return compiled(batch)

        return call

    return compile


def test_the_compiled_network_runs_the_device_pipeline_and_gives_the_same_labels(reference, monkeypatch):
    calls, compiled_modules = [], []
    monkeypatch.setattr(torch, "compile", eager_compile(calls, compiled_modules))
    runner = TorchDeviceRunner(reference.model, torch.device("cpu"), torch.float32, compiled=True)
    assert any(isinstance(module, ShiftedDepthwise) for module in compiled_modules)  # the compiler gets shifted sums
    assert not any(isinstance(module, ShiftedDepthwise) for module in runner.net.modules())  # eager keeps cuDNN's
    pipeline = DevicePipeline(runner, INPUT_SIZE, reference.info.mean, reference.info.std, reference.color_table)
    for frame in frames(SHRINK_SIZES[:2]):
        result = pipeline.run(frame, with_color=False, with_overlay=False, alpha=0.5)
        np.testing.assert_array_equal(result.labels, reference.segment(frame).labels)
    assert calls == [(1, 3, *INPUT_SIZE)] * 2


def test_a_compiler_that_fails_leaves_the_eager_network_with_a_warning(reference, monkeypatch):
    def failing(net, **options):
        def call(batch):
            raise RuntimeError("Cannot find a working triton installation\nmore detail")

        return call

    monkeypatch.setattr(torch, "compile", failing)
    runner = TorchDeviceRunner(reference.model, torch.device("cpu"), torch.float32, compiled=True)
    batch = torch.rand(1, 3, *INPUT_SIZE)
    with pytest.warns(RuntimeWarning, match="torch.compile failed, running the network eagerly: Cannot find a"):
        labels = runner(batch)
    torch.testing.assert_close(labels, TorchDeviceRunner(reference.model, torch.device("cpu"), torch.float32)(batch))
    assert runner.compiled is None  # eager from then on: no second warning, no second try


def test_cuda_compile_is_an_engine_option_the_cpu_runtimes_ignore(reference):
    frame = frames([INPUT_SIZE])[0]
    np.testing.assert_array_equal(engine(backend="torch", cuda_compile=True).segment(frame).labels,
                                  reference.segment(frame).labels)  # fmt: skip


@pytest.mark.parametrize("frame_size", SHRINK_SIZES[1:] + GROW_SIZES)
def test_device_resize_matches_opencv_within_one_level(frame_size):
    frame = frames([frame_size])[0]
    geometry = FrameGeometry(frame_size, INPUT_SIZE, "cpu")
    identity = Normalize(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))
    resized = frame_to_batch(torch.from_numpy(frame), geometry, identity, torch.float32)[0].permute(1, 2, 0)
    interpolation = cv2.INTER_AREA if geometry.area else cv2.INTER_LINEAR
    expected = cv2.resize(frame, INPUT_SIZE[::-1], interpolation=interpolation).astype(np.float32)
    assert np.abs(resized.numpy() - expected).max() <= 1.0


@pytest.mark.parametrize(("source", "target"), [(360, 200), (480, 300), (96, 720), (128, 1280), (373, 360)])
def test_nearest_indices_are_opencvs(source, target):
    ramp = np.tile(np.arange(source, dtype=np.uint16), (2, 1))
    expected = cv2.resize(ramp, (target, 2), interpolation=cv2.INTER_NEAREST)[0]
    np.testing.assert_array_equal(nearest_indices(source, target), expected)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_segment_returns_colour_and_overlay_only_when_asked(reference, onnx_engine, backend):
    chosen = reference if backend == "torch" else onnx_engine
    frame = frames([(120, 160)])[0]
    plain = chosen.segment(frame)
    assert plain.labels.shape == frame.shape[:2] and plain.color is None and plain.overlay is None
    full = chosen.segment(frame, with_color=True, with_overlay=True, overlay_alpha=0.3)
    np.testing.assert_array_equal(full.labels, plain.labels)
    np.testing.assert_array_equal(full.color, chosen.colorize(plain.labels))
    np.testing.assert_array_equal(full.overlay, chosen.overlay(frame, plain.labels, alpha=0.3))
    assert chosen.segment(frame, with_overlay=True).color is None


def test_stage_timings_cover_the_call(reference):
    timings = reference.segment(frames([(192, 256)])[0]).timings_ms
    assert set(timings) == {"preprocess", "inference", "postprocess", "total"}
    assert min(timings.values()) >= 0.0 and timings["inference"] > 0.0
    stages = timings["preprocess"] + timings["inference"] + timings["postprocess"]
    assert stages == pytest.approx(timings["total"], rel=1e-6)


def test_padded_rows_give_the_same_labels(reference):
    """Frames decoded from messages with row padding are strided views, not copies."""
    frame = frames([INPUT_SIZE])[0]
    padded = np.zeros((INPUT_SIZE[0], INPUT_SIZE[1] + 8, 3), np.uint8)
    padded[:, : INPUT_SIZE[1]] = frame
    view = padded[:, : INPUT_SIZE[1]]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(reference.segment(view).labels, reference.segment(frame).labels)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_preprocess_feeds_the_model_and_inference_step_runs_alone(reference, onnx_engine, backend):
    chosen = reference if backend == "torch" else onnx_engine
    frame = frames([INPUT_SIZE])[0]
    with torch.inference_mode():
        labels = chosen.model(chosen.preprocess(frame))["out"].argmax(1)[0].to(torch.uint8).numpy()
    expected = chosen.segment(frame).labels
    assert agreement(labels, expected) >= MIN_AGREEMENT
    assert agreement(np.asarray(chosen.inference_step(frame)()).reshape(INPUT_SIZE), expected) >= MIN_AGREEMENT


def test_an_engine_built_from_a_network_leaves_the_callers_network_as_it_was():
    """Benchmarks build several engines from one network: folding BatchNorm must not reach the others."""
    network, info = load_checkpoint(default_checkpoint())
    before = {name: value.clone() for name, value in network.state_dict().items()}
    options = EngineOptions(device="cpu", backend="torch", num_threads=1, input_size=INPUT_SIZE)
    SegmentationEngine.from_model(network, info, "student", options)
    after = network.state_dict()
    assert after.keys() == before.keys() and any("running_mean" in name for name in after)
    assert all(torch.equal(after[name], value) for name, value in before.items())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "tensorrt"}, "backend must be one of"),
        ({"precision": "fp16"}, "'fp16' runs with torch on cuda only"),
        ({"precision": "int4"}, "precision must be one of"),
        ({"device": "tpu"}, "device must be one of"),
        ({"device": "cuda:"}, r"or cuda:N \(a GPU by its index\), got 'cuda:'"),
        ({"device": "cuda:7"}, "device 'cuda:7'"),
        ({"num_threads": -1}, r"num_threads must be 0\.\.256, got -1"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(EngineError, match=message):
        engine(**options)


def test_onnxruntime_refuses_cuda():
    if torch.cuda.is_available():
        with pytest.raises(EngineError, match="runs on cpu only"):
            engine(device="cuda", backend="onnxruntime")
    else:
        with pytest.raises(EngineError, match="no CUDA device"):
            engine(device="cuda", backend="onnxruntime")


def test_bad_frames_and_alpha_are_named(reference):
    with pytest.raises(ValueError, match="uint8"):
        reference.segment(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="H x W x 3"):
        reference.segment(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="overlay_alpha"):
        reference.segment(np.zeros((10, 10, 3), np.uint8), with_overlay=True, overlay_alpha=1.5)


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_cuda_gives_the_cpu_fp32_labels(reference, precision, cuda_graphs):
    gpu = engine(device="cuda", precision=precision, cuda_graphs=cuda_graphs)
    for frame in frames(SHRINK_SIZES):
        result = gpu.segment(frame, with_color=True, with_overlay=True)
        assert agreement(result.labels, reference.segment(frame).labels) >= MIN_AGREEMENT
        np.testing.assert_array_equal(result.color, reference.colorize(result.labels))
        np.testing.assert_array_equal(result.overlay, reference.overlay(frame, result.labels))
        assert result.timings_ms["inference"] > 0.0


@needs_cuda
def test_cuda_compiled_gives_the_cpu_fp32_labels(reference):
    gpu = engine(device="cuda", precision="fp16", cuda_compile=True)
    for frame in frames(SHRINK_SIZES[:2]):
        assert agreement(gpu.segment(frame).labels, reference.segment(frame).labels) >= MIN_AGREEMENT


@needs_cuda
def test_cuda_results_survive_the_next_frame(reference):
    """Results come back in fresh host memory, not in buffers the next frame overwrites."""
    gpu = engine(device="cuda", precision="fp16")
    first, second = frames([INPUT_SIZE, INPUT_SIZE], seed=7)
    kept = gpu.segment(first, with_color=True)
    copy = kept.labels.copy(), kept.color.copy()
    gpu.segment(second, with_color=True)
    np.testing.assert_array_equal(kept.labels, copy[0])
    np.testing.assert_array_equal(kept.color, copy[1])
