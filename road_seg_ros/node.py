"""The live segmentation node: camera frames in, class ids, colours, overlay and timing out.

The subscription callback only stores the newest frame; a worker thread runs
the engine on it, so inference never blocks receiving and a slow model drops
stale frames (counted) instead of building a backlog. Everything else here is
parameters, message plumbing and diagnostics: the engine does the work.
"""

import io
import math
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image

from . import image_conversion
from .checkpoint import CheckpointError
from .engine import BACKENDS, DEVICES, PACKAGE_ROOT, PRECISIONS, EngineError, SegmentationEngine
from .image_conversion import ImageError, array_to_image, compressed_to_rgb, image_to_rgb

NODE_NAME = "road_seg"
PACKAGE = "road_seg_ros"
DDS_PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
DDS_PROFILE_NAME = "fastdds.xml"
PARAMS_FILE_NAME = "road_seg.yaml"
# Distros whose Fast DDS 2.x reads only the old variable; Fast DDS 3 warns that it is deprecated.
FASTDDS_2_DISTROS = ("humble", "iron", "jazzy")
DIAGNOSTICS_PERIOD_S = 1.0
STOP_CHECK_PERIOD_S = 0.1  # how soon Ctrl-C or SIGTERM is acted on
REJECT_LOG_PERIOD_S = 10.0  # a bad stream logs each reason once, then at most this often
LATENCY_WINDOW = 200  # frames behind the latency percentiles
INFERENCE_ERROR = "inference_error"
REJECT_REASONS = (
    image_conversion.UNSUPPORTED_ENCODING,
    image_conversion.SHORT_DATA,
    image_conversion.ZERO_SIZE,
    image_conversion.CORRUPT_COMPRESSED,
    image_conversion.OVERSIZE,
    INFERENCE_ERROR,
)


def _image_outputs(segmentation, wanted) -> dict:
    """The image outputs somebody subscribes to, as (pixels, encoding)."""
    images = {"label": (segmentation.labels, "mono8")}
    if segmentation.color is not None:
        images["color"] = (segmentation.color, "rgb8")
    if segmentation.overlay is not None:
        images["overlay"] = (segmentation.overlay, "rgb8")
    return {name: image for name, image in images.items() if name in wanted}


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    description: str
    choices: tuple = ()
    limits: tuple | None = None  # inclusive (low, high)
    read_only: bool = True  # fixed at start-up; the others may change while running

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(name=self.name, description=self.description, read_only=self.read_only)
        if self.choices:
            descriptor.additional_constraints = f"one of: {', '.join(self.choices)}"
        if self.limits and isinstance(self.default, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=self.limits[0], to_value=self.limits[1])]
        elif self.limits:
            descriptor.integer_range = [IntegerRange(from_value=self.limits[0], to_value=self.limits[1], step=1)]
        return descriptor


# The one place parameter defaults live; config/road_seg.yaml repeats them for users.
PARAMETERS = (
    Param("model_path", "", "Checkpoint (.safetensors) to run; empty: the shipped student"),
    Param("device", "auto", "Inference device; auto picks CUDA when present", choices=DEVICES),
    Param("precision", "fp32", "Inference precision; fp16 needs CUDA", choices=PRECISIONS),
    Param("backend", "auto", "Inference runtime: auto is ONNX Runtime on the CPU, PyTorch on CUDA", choices=BACKENDS),
    Param("num_threads", 0, "CPU threads for inference; 0: the runtime's default", limits=(0, 256)),
    Param("input_transport", "raw", "raw: subscribe 'image'; compressed: 'image/compressed'", ("raw", "compressed")),
    Param("qos_reliability", "best_effort", "Reliability of the input and outputs", ("best_effort", "reliable")),
    Param("qos_depth", 1, "History depth of the input and outputs", limits=(1, 100)),
    Param("overlay_alpha", 0.5, "Weight of the class colours in ~/overlay", limits=(0.0, 1.0), read_only=False),
    Param(
        "max_input_pixels", 3840 * 2160, "Larger frames are rejected; 0: no limit", limits=(0, 10**9), read_only=False
    ),
    Param(
        "min_fps",
        5.0,
        "/diagnostics warns when output is slower while input flows",
        limits=(0.0, 1000.0),
        read_only=False,
    ),
)
PARAMETERS_BY_NAME = {param.name: param for param in PARAMETERS}


def config_file(name: str) -> Path | None:
    """A shipped config/ file: from a source checkout, else the installed package share; None if missing."""
    candidates = [PACKAGE_ROOT / "config", Path(sys.prefix) / "share" / PACKAGE / "config"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / "config")
    except (ImportError, LookupError, OSError):
        pass  # not in a ROS 2 workspace
    return next((folder / name for folder in candidates if (folder / name).is_file()), None)


def apply_dds_profile(environ=os.environ) -> None:
    """Points FastDDS at the large-frame profile unless the user chose a profile; call before rclpy.init."""
    if any(environ.get(name) for name in DDS_PROFILE_VARIABLES):
        return
    profile = config_file(DDS_PROFILE_NAME)
    if profile:
        environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
        if environ.get("ROS_DISTRO") in FASTDDS_2_DISTROS:
            environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(profile)


class LatestFrame:
    """A one-frame mailbox: a new frame replaces the one the worker has not taken yet."""

    def __init__(self):
        self._ready = threading.Condition()
        self._frame = None
        self._closed = False

    def put(self, frame) -> bool:
        """Stores ``frame``; True when it overwrote an untaken one."""
        with self._ready:
            overwritten = self._frame is not None
            self._frame = frame
            self._ready.notify()
        return overwritten

    def take(self):
        """Waits for a frame; None once closed."""
        with self._ready:
            while self._frame is None and not self._closed:
                self._ready.wait()
            frame, self._frame = self._frame, None
        return None if self._closed else frame

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class FrameStats:
    """Frame counts since start and over the current diagnostics window, and recent latencies."""

    def __init__(self):
        self._lock = threading.Lock()
        self.totals = Counter()
        self.rejected = Counter()
        self._window = Counter()
        self._window_start = time.monotonic()
        self._latencies_ms = deque(maxlen=LATENCY_WINDOW)

    def count(self, event: str, reason: str = "") -> int:
        """Counts ``event`` (received, dropped, idle, rejected); returns the total for ``reason`` if given."""
        with self._lock:
            self.totals[event] += 1
            self._window[event] += 1
            if reason:
                self.rejected[reason] += 1
            return self.rejected[reason] if reason else self.totals[event]

    def published(self, latency_ms: float) -> None:
        with self._lock:
            self.totals["published"] += 1
            self._window["published"] += 1
            self._latencies_ms.append(latency_ms)

    def take_window(self) -> tuple[Counter, float, list]:
        """The window's counts, its length in seconds and the recent latencies; starts a new window."""
        with self._lock:
            now = time.monotonic()
            window, seconds = self._window, max(now - self._window_start, 1e-6)
            self._window, self._window_start = Counter(), now
            return window, seconds, list(self._latencies_ms)


class RoadSegNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        # Registered first so start-up values go through the same checks as set_parameters.
        self.add_on_set_parameters_callback(self._check_parameters)
        for param in PARAMETERS:
            self.declare_parameter(param.name, param.default, param.descriptor())
        self.engine = SegmentationEngine(
            checkpoint=self._param("model_path") or None,
            device=self._param("device"),
            precision=self._param("precision"),
            num_threads=self._param("num_threads") or None,
            backend=self._param("backend"),
        )
        self.engine.segment(np.zeros((*self.engine.input_size, 3), np.uint8))  # warm-up off the first frame's clock
        qos = self._qos()
        compressed = self._param("input_transport") == "compressed"
        self._decode = compressed_to_rgb if compressed else image_to_rgb
        self._outputs = {
            "label": self.create_publisher(Image, "~/label", qos),
            "color": self.create_publisher(Image, "~/color", qos),
            "overlay": self.create_publisher(Image, "~/overlay", qos),
            "timing": self.create_publisher(DiagnosticArray, "~/timing", qos),
        }
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._input = self.create_subscription(
            CompressedImage if compressed else Image, "image/compressed" if compressed else "image", self._receive, qos
        )
        self._latest = LatestFrame()
        self._stats = FrameStats()
        self._last_reject_log = {}
        self._worker = threading.Thread(target=self._work, name="road_seg_inference", daemon=True)
        self._worker.start()
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        engine = self.engine
        self.get_logger().info(
            f"ready: {engine.model_name} on {engine.device} ({engine.precision}, {engine.backend}), "
            f"input {self._input.topic_name} ({self._param('qos_reliability')}, depth {self._param('qos_depth')})"
        )

    def close(self) -> None:
        """Stops the worker after the frame it is on."""
        self._latest.close()
        self._worker.join(timeout=30.0)

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _qos(self) -> QoSProfile:
        reliable = self._param("qos_reliability") == "reliable"
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=self._param("qos_depth"),
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.VOLATILE,
        )

    def _check_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            param = PARAMETERS_BY_NAME.get(parameter.name)
            if param and param.choices and parameter.value not in param.choices:
                reason = f"{param.name} must be one of {', '.join(param.choices)}, got {parameter.value!r}"
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _receive(self, msg) -> None:
        self._stats.count("received")
        if self._latest.put((msg, time.monotonic())):
            self._stats.count("dropped")

    def _work(self) -> None:
        while (frame := self._latest.take()) is not None:
            self._process(*frame)

    def _process(self, msg, received_at: float) -> None:
        wanted = {name for name, publisher in self._outputs.items() if publisher.get_subscription_count()}
        if not wanted:
            self._stats.count("idle")
            return
        started = time.perf_counter()
        try:
            rgb = self._decode(msg, max_pixels=self._param("max_input_pixels"))
            decoded = time.perf_counter()
            segmentation = self.engine.segment(
                rgb,
                with_color="color" in wanted,
                with_overlay="overlay" in wanted,
                overlay_alpha=self._param("overlay_alpha"),
            )  # colour and overlay come from the engine's own pass: on the GPU when it runs there
        except ImageError as error:
            self._reject(error.reason, str(error))
            return
        except RuntimeError as error:  # e.g. CUDA out of memory: skip the frame, keep serving
            self._reject(INFERENCE_ERROR, str(error).splitlines()[0])
            return
        timings = {"decode": (decoded - started) * 1000.0, **segmentation.timings_ms}
        timings.pop("total", None)  # the node's total below spans decode to publish
        images = _image_outputs(segmentation, wanted)
        publishing = time.perf_counter()
        for name, (pixels, encoding) in images.items():
            self._outputs[name].publish(array_to_image(pixels, encoding, msg.header))
        done = time.perf_counter()
        timings["publish"] = (done - publishing) * 1000.0
        timings["total"] = (done - started) * 1000.0
        timings["queue"] = (started - received_at) * 1000.0
        if "timing" in wanted:
            self._outputs["timing"].publish(self._timing_message(msg.header, timings, sorted(images)))
        self._stats.published((done - received_at) * 1000.0)

    def _timing_message(self, header, timings: dict, outputs: list) -> DiagnosticArray:
        stamp_ns = header.stamp.sec * 10**9 + header.stamp.nanosec
        age_ms = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6 if stamp_ns else math.nan
        values = [KeyValue(key=f"{stage}_ms", value=f"{ms:.3f}") for stage, ms in timings.items()]
        values += [KeyValue(key="age_ms", value=f"{age_ms:.3f}"), KeyValue(key="outputs", value=",".join(outputs))]
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK,
            name=f"{self.get_fully_qualified_name()}: frame timing",
            message=f"frame {header.frame_id}",
            hardware_id=str(self.engine.device),
            values=values,
        )
        return DiagnosticArray(header=header, status=[status])

    def _reject(self, reason: str, message: str) -> None:
        count = self._stats.count("rejected", reason)
        now = time.monotonic()
        if now - self._last_reject_log.get(reason, -math.inf) >= REJECT_LOG_PERIOD_S:
            self._last_reject_log[reason] = now
            self.get_logger().warning(f"frame skipped ({reason}, {count} so far): {message}")

    def _publish_diagnostics(self) -> None:
        window, seconds, latencies = self._stats.take_window()
        fps_in, fps_out = window["received"] / seconds, window["published"] / seconds
        level, message = self._health(window, fps_out)
        percentiles = np.percentile(latencies, [50, 90, 95, 99]) if latencies else [math.nan] * 4
        totals = self._stats.totals
        values = {
            "fps_in": f"{fps_in:.2f}",
            "fps_out": f"{fps_out:.2f}",
            **{f"latency_p{p}_ms": f"{v:.2f}" for p, v in zip((50, 90, 95, 99), percentiles)},
            "frames_in": totals["received"],
            "frames_out": totals["published"],
            "frames_dropped": totals["dropped"],
            "frames_rejected": totals["rejected"],
            "frames_idle": totals["idle"],
            **{f"rejected_{reason}": self._stats.rejected[reason] for reason in REJECT_REASONS},
            "device": self.engine.device,
            "precision": self.engine.precision,
            "backend": self.engine.backend,
            "model": self.engine.model_name,
            "input_topic": self._input.topic_name,
        }
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: segmentation",
            message=message,
            hardware_id=str(self.engine.device),
            values=[KeyValue(key=key, value=str(value)) for key, value in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    def _health(self, window: Counter, fps_out: float) -> tuple[bytes, str]:
        if not window["received"]:
            return DiagnosticStatus.OK, f"no images on {self._input.topic_name} in the last second"
        if window["idle"] == window["received"]:
            return DiagnosticStatus.OK, "idle: no subscribers to any output"
        problems = []
        min_fps = self._param("min_fps")
        if fps_out < min_fps:
            problems.append(f"output {fps_out:.1f} fps is below min_fps {min_fps:g}")
        if window["dropped"]:
            problems.append(f"dropped {window['dropped']} frames: inference is slower than the input")
        if window["rejected"]:
            problems.append(f"rejected {window['rejected']} bad frames")
        if problems:
            return DiagnosticStatus.WARN, "; ".join(problems)
        return DiagnosticStatus.OK, f"{fps_out:.1f} fps"


def fast_executor(context=None) -> Executor:
    """rclpy's C++ events executor where the distro has it (Kilted on), else the single-threaded one.

    The Python executor rebuilds its wait set in Python, holding the GIL, after every callback; the
    worker thread waits for it before it can start on a frame. Measured here (benchmarks/cpu.md):
    the hand-over falls from about 0.6 ms to 0.15 ms at 360x480.
    """
    try:
        from rclpy.experimental import EventsExecutor

        return EventsExecutor(context=context)
    # UnsupportedOperation: it enables faulthandler, which needs a real stderr (not so under capsys)
    except (ImportError, io.UnsupportedOperation):
        return SingleThreadedExecutor(context=context)


def main(args=None) -> int:
    # Our own handlers only set a flag: rclpy's default raises KeyboardInterrupt wherever the main thread
    # is, even inside converting a received message, which then surfaces as a traceback.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    apply_dds_profile()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = RoadSegNode()
    except (ParameterException, EngineError, CheckpointError) as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {error}")
        rclpy.try_shutdown()
        return 1
    executor = fast_executor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=STOP_CHECK_PERIOD_S)
    finally:
        node.close()  # the worker finishes its frame while it can still publish
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
