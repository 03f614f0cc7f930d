"""The live segmentation node: camera frames in, class ids, colours, overlay and timing out.

The subscription callback only stores the newest frame; a worker thread runs
the engine on it, so inference never blocks receiving and a slow model drops
stale frames (counted) instead of building a backlog. Everything else here is
parameters, message plumbing and diagnostics: the engine does the work.

Whatever goes wrong with one frame is that frame's rejection, counted by
reason in /diagnostics; the worker never stops on a frame. Should it stop all
the same, the node logs FATAL and exits with status 1, so a launch file's
``respawn`` brings it back instead of a process that no longer segments.
"""

import math
import os
import signal
import sys
import threading
import time
import traceback

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, ShutdownException
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image

from ..core.checkpoint import CheckpointError
from ..core.engine import SegmentationEngine
from ..core.frames import stamp_ns
from ..core.options import EngineError, EngineOptions
from . import diagnostics, qos
from .image_conversion import ImageError, array_to_image, compressed_to_rgb, image_to_rgb
from .params import NODE_NAME, PARAMETERS, PARAMETERS_BY_NAME
from .runtime import apply_dds_profile, fast_executor, refuse_malformed_parameter_requests

DIAGNOSTICS_PERIOD_S = 1.0
STOP_CHECK_PERIOD_S = 0.1  # how soon Ctrl-C, SIGTERM or a stopped worker is acted on
REJECT_LOG_PERIOD_S = 10.0  # a bad stream logs each reason once, then at most this often
# On SIGTERM the worker may finish the frame it is on for this long (tens of ms for a camera frame); past it
# the node exits without it: a frame at the codec's pixel ceiling decodes for 0.3-1.6 s on a busy 2-core CPU.
# Measured with that frame mid-decode: SIGTERM to exit in 0.3-0.6 s (test_hostile_node.py).
WORKER_STOP_TIMEOUT_S = 0.5
EXIT_WORKER_STOPPED = 1


def _image_outputs(segmentation, wanted) -> dict:
    """The image outputs somebody subscribes to, as (pixels, encoding)."""
    images = {"label": (segmentation.labels, "mono8")}
    if segmentation.color is not None:
        images["color"] = (segmentation.color, "rgb8")
    if segmentation.overlay is not None:
        images["overlay"] = (segmentation.overlay, "rgb8")
    return {name: image for name, image in images.items() if name in wanted}


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

    @property
    def closed(self) -> bool:
        return self._closed


class RoadSegNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        # Registered first so start-up values go through the same checks as set_parameters.
        self.add_on_set_parameters_callback(self._check_parameters)
        refuse_malformed_parameter_requests(self)
        for param in PARAMETERS:
            self.declare_parameter(param.name, param.default, param.descriptor())
        self.engine = SegmentationEngine(EngineOptions.from_parameters(self._values()))
        warm_up_started = time.perf_counter()
        self.engine.segment(np.zeros((*self.engine.input_size, 3), np.uint8))  # warm-up off the first frame's clock
        warm_up_s = time.perf_counter() - warm_up_started
        output_qos = qos.profile(qos.POLICIES[self._param("output_reliability")], self._param("qos_depth"))
        compressed = self._param("input_transport") == "compressed"
        self._decode = compressed_to_rgb if compressed else image_to_rgb
        self._outputs = {
            "label": self.create_publisher(Image, "~/label", output_qos),
            "color": self.create_publisher(Image, "~/color", output_qos),
            "overlay": self.create_publisher(Image, "~/overlay", output_qos),
            "timing": self.create_publisher(DiagnosticArray, "~/timing", output_qos),
        }
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._input = qos.InputSubscription(
            self,
            CompressedImage if compressed else Image,
            "image/compressed" if compressed else "image",
            self._receive,
            self._param("qos_reliability"),
            self._param("qos_depth"),
        )
        self._latest = LatestFrame()
        self._stats = diagnostics.FrameStats(frame_s=warm_up_s)
        self._last_reject_log = {}
        self.worker_stopped = threading.Event()  # set if the worker ends without being asked to
        self._worker = threading.Thread(target=self._work, name="road_seg_inference", daemon=True)
        self._worker.start()
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        engine = self.engine
        self.get_logger().info(
            f"ready: {engine.checkpoint or engine.model_name} on {engine.device} ({engine.precision}, "
            f"{engine.backend}), input {self._input.topic_name} ({self._input.describe()}), "
            f"outputs {self._param('output_reliability')}, depth {self._param('qos_depth')}"
        )

    def close(self) -> None:
        """Stops the worker after the frame it is on, waiting WORKER_STOP_TIMEOUT_S at most."""
        self._latest.close()
        self._worker.join(timeout=WORKER_STOP_TIMEOUT_S)

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _values(self) -> dict:
        return {param.name: self._param(param.name) for param in PARAMETERS}

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
        try:
            while (frame := self._latest.take()) is not None:
                self._process(*frame)
        except BaseException as error:  # the thread ends either way: say why; main then exits non-zero
            if not self._latest.closed:
                self.get_logger().fatal(f"inference worker stopped: {_describe(error)}; exiting")
                self.worker_stopped.set()

    def _process(self, msg, received_at: float) -> None:
        """One frame: its outputs published, or its rejection counted, whatever it holds."""
        try:
            self._segment(msg, received_at)
        except ImageError as error:
            self._reject(error.reason, str(error))
        except RuntimeError as error:  # e.g. CUDA out of memory: skip the frame, keep serving
            self._reject(diagnostics.INFERENCE_ERROR, _describe(error))
        except Exception as error:  # a bug or a frame nobody foresaw: that frame only
            self._reject(diagnostics.INTERNAL_ERROR, _describe(error))

    def _segment(self, msg, received_at: float) -> None:
        wanted = {name for name, publisher in self._outputs.items() if publisher.get_subscription_count()}
        if not wanted:
            self._stats.count("idle")
            return
        started = time.perf_counter()
        rgb = self._decode(msg, max_pixels=self._param("max_input_pixels"))
        decoded = time.perf_counter()
        segmentation = self.engine.segment(
            rgb,
            with_color="color" in wanted,
            with_overlay="overlay" in wanted,
            overlay_alpha=self._param("overlay_alpha"),
        )  # colour and overlay come from the engine's own pass: on the GPU when it runs there
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
        stamp = stamp_ns(header)
        age_ms = (self.get_clock().now().nanoseconds - stamp) / 1e6 if stamp else math.nan
        return diagnostics.status_array(
            DiagnosticStatus.OK,
            f"{self.get_fully_qualified_name()}: frame timing",
            f"frame {header.frame_id}",
            str(self.engine.device),
            diagnostics.timing_values(timings, age_ms, outputs),
            header,
        )

    def _reject(self, reason: str, message: str) -> None:
        count = self._stats.count("rejected", reason)
        now = time.monotonic()
        if now - self._last_reject_log.get(reason, -math.inf) >= REJECT_LOG_PERIOD_S:
            self._last_reject_log[reason] = now
            self.get_logger().warning(f"frame skipped ({reason}, {count} so far): {message}")

    def _publish_diagnostics(self) -> None:
        window, seconds, latencies = self._stats.take_window()
        fps_out = window["published"] / seconds
        topic = self._input.topic_name
        level, message = diagnostics.health(window, fps_out, self._param("min_fps"), topic, self._stats.silent_s())
        values = {
            **diagnostics.summary_values(self._stats, window, seconds, latencies),
            "device": self.engine.device,
            "precision": self.engine.precision,
            "backend": self.engine.backend,
            "model": self.engine.model_name,
            "input_topic": self._input.topic_name,
        }
        array = diagnostics.status_array(
            level, f"{self.get_fully_qualified_name()}: segmentation", message, str(self.engine.device), values
        )
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)


def main(args=None) -> int:
    """Runs the node until SIGINT or SIGTERM (exit 0) or a stopped worker (exit 1); 1 if it cannot start."""
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
        while not stop.is_set() and rclpy.ok() and not node.worker_stopped.is_set():
            _spin_once(executor, node)
    finally:
        node.close()  # the worker finishes its frame while it can still publish
        node.destroy_node()
        rclpy.try_shutdown()
    _exit_now(EXIT_WORKER_STOPPED if node.worker_stopped.is_set() else 0)


def _exit_now(status: int) -> None:
    """Ends the process once the node is shut down, without finalising the interpreter.

    Finalising would only tear down torch's modules, 2-3 s on a busy 2-core CPU (past the 2 s a SIGTERM
    may take), and with the worker still inside OpenCV or the runtime it aborts the process (std::terminate
    from a native thread pool).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _spin_once(executor, node) -> None:
    """One turn of the executor; an exception from a callback is logged and the node goes on serving."""
    try:
        executor.spin_once(timeout_sec=STOP_CHECK_PERIOD_S)
    except (ExternalShutdownException, ShutdownException):
        raise
    except Exception as error:  # e.g. a request rclpy itself cannot parse: one caller's problem, not the node's
        node.get_logger().error(
            f"callback failed, still serving: {_describe(error)}", throttle_duration_sec=REJECT_LOG_PERIOD_S
        )


def _describe(error: BaseException) -> str:
    """One line: the exception's type and first line, and where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}{where}"


if __name__ == "__main__":
    sys.exit(main())
