"""The OpenVINO backend: an exported network compiled for the CPU, uint8 frames in, class ids out.

The compiled graph normalises the frame itself (OpenVINO's PrePostProcessor in
front of the network, the same ``uint8 * scale + offset`` in float32 as the
host pipeline), so the host hands over the resized uint8 frame without a copy.

Precisions: ``fp32`` runs every layer in float32 (OpenVINO otherwise picks
bfloat16 on CPUs with AMX, and its labels then differ from PyTorch's);
``bf16`` asks for bfloat16 where the CPU has it; ``int8`` runs the network
NNCF quantized for this checkpoint and input size (``road-seg-export --format
openvino --precision int8``), read from beside the checkpoint. The engine never
quantizes by itself: calibration needs CamVid's train frames and a minute, not
a node's start-up.

Compiled models are cached on disk (next to the checkpoint when that folder is
writable, else in ~/.cache/road_seg_ros), each file with a SHA-256 of its
contents. OpenVINO's own CACHE_DIR imports a blob with flipped bytes without
complaint and then computes wrong labels (measured: 6% of pixels right), so a
cache file whose checksum does not match is rebuilt instead of trusted.
"""

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from .files import written_whole
from .options import EngineError
from .preprocess import normalisation

METADATA_KEY = "road_seg"  # the rt_info section of the IR files road-seg-export writes
CACHE_MAGIC = b"road_seg openvino cache 1\n"
CACHE_FOLDER = ".openvino_cache"
# INFERENCE_PRECISION_HINT per precision; int8 leaves the unquantized layers to OpenVINO (bf16 on AMX CPUs).
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16"}
_log = logging.getLogger(__name__)


class OpenVinoRunner:
    """An OpenVINO model compiled for the CPU: N x H x W x 3 uint8 RGB frames (at the input size) -> N x H x W uint8
    class ids. A batch of another N compiles the model for it once, on first use."""

    layout = "rgb8"
    on_device = False

    def __init__(self, source, setup):
        """``source``: ONNX bytes of a ``LabelsNet``, or the path of an IR file (.xml); ``setup``: a RunnerSetup."""
        import openvino

        self._core = openvino.Core()
        if not cpu_runs(setup.precision):
            raise EngineError("precision 'bf16' needs a CPU with bfloat16 instructions (AVX512_BF16 or AMX)")
        if isinstance(source, Path):
            model, digest = self._core.read_model(str(source)), file_digest(source, source.with_suffix(".bin"))
        else:
            model, digest = self._core.read_model(source, b""), hashlib.sha256(source).hexdigest()
        self._model = with_normalisation(model, setup.mean, setup.std)
        # No pinning: the node shares the cores with the robot's other processes, and threads pinned to a busy core
        # wait for it (measured on the 2-core machine under load, bf16: 56 ms p50 pinned, 44 ms not).
        self._config = {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        if setup.precision in INFERENCE_PRECISION:
            self._config["INFERENCE_PRECISION_HINT"] = INFERENCE_PRECISION[setup.precision]
        if setup.num_threads:
            self._config["INFERENCE_NUM_THREADS"] = setup.num_threads
        self._cache = CompiledModelCache(cache_folder(setup.checkpoint))
        self._identity = {
            "model": digest,
            "normalisation": [list(map(float, setup.mean)), list(map(float, setup.std))],
            "config": self._config,
            "openvino": openvino.get_version(),
            "cpu": [self._core.get_property("CPU", name) for name in ("FULL_DEVICE_NAME", "OPTIMIZATION_CAPABILITIES")],
        }
        self._requests = {}
        self._request(1)  # compiled now, not on the first frame

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        request = self._requests.get(len(batch)) or self._request(len(batch))
        return request.infer({0: batch}, share_inputs=True)[0]

    def _request(self, batch_size: int):
        model = self._model.clone()
        _, height, width, channels = model.input(0).get_partial_shape().to_shape()
        model.reshape([batch_size, height, width, channels])
        key = hashlib.sha256(json.dumps({**self._identity, "batch": batch_size}, sort_keys=True).encode()).hexdigest()
        compiled = self._cache.compile(self._core, model, self._config, key)
        self._requests[batch_size] = compiled.create_infer_request()
        return self._requests[batch_size]


def cpu_runs(precision: str) -> bool:
    """Whether this CPU runs ``precision`` natively: bf16 needs AVX512_BF16 or AMX, the others run anywhere."""
    import openvino

    return precision != "bf16" or "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def with_normalisation(model, mean, std):
    """``model`` (1 x 3 x H x W normalised float input) behind a 1 x H x W x 3 uint8 input that it normalises."""
    from openvino import Layout, Type
    from openvino import opset13 as ops
    from openvino.preprocess import PrePostProcessor

    scale, offset = (value.reshape(1, 1, 1, 3) for value in normalisation(mean, std))
    processor = PrePostProcessor(model)
    processor.input().tensor().set_element_type(Type.u8).set_layout(Layout("NHWC"))
    processor.input().model().set_layout(Layout("NCHW"))
    processor.input().preprocess().convert_element_type(Type.f32).custom(
        lambda pixels: ops.add(ops.multiply(pixels, ops.constant(scale)), ops.constant(offset)).output(0)
    )
    return processor.build()


class CompiledModelCache:
    """Compiled models on disk under a key, each file checked against the SHA-256 written with it."""

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.blob"

    def compile(self, core, model, config: dict, key: str):
        path = self.path(key)
        blob = self._read(path)
        if blob is not None:
            try:
                return core.import_model(blob, "CPU", config)
            except RuntimeError as error:
                _log.warning("OpenVINO cache file %s does not import (%s); rebuilding it", path, error)
        compiled = core.compile_model(model, "CPU", config)
        stream = io.BytesIO()
        compiled.export_model(stream)
        self._write(path, stream.getvalue())
        return compiled

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            _log.warning("cannot read OpenVINO cache file %s (%s); rebuilding it", path, error)
            return None
        header = len(CACHE_MAGIC) + hashlib.sha256().digest_size
        blob = data[header:]
        if data[: len(CACHE_MAGIC)] != CACHE_MAGIC or data[len(CACHE_MAGIC) : header] != hashlib.sha256(blob).digest():
            _log.warning("OpenVINO cache file %s is corrupt (checksum mismatch); rebuilding it", path)
            return None
        return blob

    @staticmethod
    def _write(path: Path, blob: bytes) -> None:
        """Writes atomically (a temporary file renamed); a cache that cannot be written only costs the next start."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with written_whole(path) as temporary:
                temporary.write_bytes(CACHE_MAGIC + hashlib.sha256(blob).digest() + blob)
        except OSError as error:
            _log.warning("cannot write OpenVINO cache file %s (%s)", path, error)


def cache_folder(checkpoint) -> Path:
    """``.openvino_cache`` next to the checkpoint when that folder is writable, else ~/.cache/road_seg_ros/openvino."""
    if checkpoint is not None and os.access(Path(checkpoint).parent, os.W_OK):
        return Path(checkpoint).parent / CACHE_FOLDER
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "road_seg_ros" / "openvino"


# --------------------------------------------------------------------------- int8 models beside the checkpoint


def quantized_model_path(checkpoint, input_size) -> Path:
    """The int8 model for ``checkpoint`` at ``input_size`` (height, width): beside it, e.g. student.int8.360x480.xml."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.int8.{input_size[0]}x{input_size[1]}.xml")


def quantized_model(checkpoint, input_size) -> Path:
    """The path of the int8 model made from this very checkpoint at ``input_size``; EngineError (one line) when
    there is none, or the one there was made from another checkpoint (the SHA-256 it records differs)."""
    if checkpoint is None:
        raise EngineError("precision 'int8' needs a checkpoint file: its int8 model is read from beside it")
    path = quantized_model_path(checkpoint, input_size)
    make = (
        f"road-seg-export --format openvino --precision int8 --checkpoint {checkpoint} "
        f"--input-size {input_size[0]} {input_size[1]}"
    )
    if not (path.is_file() and path.with_suffix(".bin").is_file()):
        raise EngineError(f"no int8 model {path} for this checkpoint and input size; make it with: {make}")
    if recorded_checkpoint_digest(path) != file_digest(checkpoint):
        raise EngineError(f"{path} was made from another checkpoint than {checkpoint}; remake it with: {make}")
    return path


def recorded_checkpoint_digest(ir_path: Path) -> str | None:
    """The checkpoint SHA-256 recorded in an IR file that road-seg-export wrote; None when it records none."""
    import openvino

    model = openvino.Core().read_model(str(ir_path))
    key = [METADATA_KEY, "checkpoint_sha256"]
    return model.get_rt_info(key).astype(str) if model.has_rt_info(key) else None


def file_digest(*paths) -> str:
    """SHA-256 of the files' contents, one after the other, hex."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for chunk in iter(lambda handle=handle: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
