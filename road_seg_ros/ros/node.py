"""The live segmentation node: camera frames in, class ids, colours, overlay and timing out.

The subscription callbacks only store each camera's newest frames (two); a worker
thread takes every camera's waiting frame at once and runs them through the
engine as one batch, so inference never blocks receiving, a slow model drops
stale frames (counted) instead of building a backlog, and one model serves
all cameras. Everything else here is parameters, message plumbing and
diagnostics: the engine does the work.

It is a managed (lifecycle) node: configure builds and warms the engine, activate subscribes and
publishes, deactivate stops both, cleanup frees the engine, shutdown ends the process. With ``autostart``
(the default) it configures and activates itself at start-up.

Whatever goes wrong with one frame is that frame's rejection, counted by
reason in /diagnostics; the worker never stops on a frame. Should it stop all
the same, the node logs FATAL and exits with status 1, so a launch file's
``respawn`` brings it back instead of a process that no longer segments.
"""

import math
import signal
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions

from ..core.checkpoint import CheckpointError
from ..core.engine import SegmentationEngine
from ..core.files import one_line
from ..core.frames import stamp_ns
from ..core.options import EngineError, EngineOptions
from . import diagnostics, qos
from .cameras import IMAGE_OUTPUTS, Camera, LatestFrames, camera_names_problem
from .image_conversion import ImageError, array_to_compressed, array_to_image, compressed_to_rgb, image_to_rgb
from .params import NODE_NAME, PARAMETERS, PARAMETERS_BY_NAME, declare, declare_model_parameters
from .runtime import (
    apply_dds_profile,
    describe_error,
    exit_now,
    fast_executor,
    refuse_malformed_parameter_requests,
    spin_once,
)

DIAGNOSTICS_PERIOD_S = 1.0
# On SIGTERM the worker may finish the frame it is on for this long (tens of ms for a camera frame); past it
# the node exits without it: a frame at the codec's pixel ceiling decodes for 0.3-1.6 s on a busy 2-core CPU.
# Measured with that frame mid-decode: SIGTERM to exit in 0.3-0.6 s. test_hostile_node.py checks that the node
# exits while its worker is stuck in a decode that never ends.
WORKER_STOP_TIMEOUT_S = 0.5
EXIT_WORKER_STOPPED = 1


def _image_outputs(segmentation, wanted) -> dict:
    """The images somebody subscribes to, raw or compressed, as name -> pixels."""
    images = {"label": segmentation.labels, "color": segmentation.color, "overlay": segmentation.overlay}
    return {name: pixels for name, pixels in images.items() if _wants(wanted, name)}


def _wants(wanted, image: str) -> bool:
    return image in wanted or f"{image}/compressed" in wanted


@dataclass
class DecodedFrame:
    """One camera's decoded frame on its way through a batch."""

    camera: Camera
    msg: object
    received_at: float
    started: float  # when the worker took it up
    rgb: np.ndarray
    wanted: set
    decode_ms: float


class RoadSegNode(LifecycleNode):
    """A managed node: configure builds and warms the engine, activate subscribes and publishes, deactivate stops
    both, cleanup frees the engine. With ``autostart`` (the default) main() configures and activates it."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        # Registered first so start-up values go through the same checks as set_parameters.
        self.add_on_set_parameters_callback(self._check_parameters)
        refuse_malformed_parameter_requests(self)
        for param in PARAMETERS:
            declare(self, param)
        self.engine, self._cameras, self._worker, self._timer, self._diagnostics = None, [], None, None, None
        self.failure = None  # why the last transition failed, one line
        self.worker_stopped = threading.Event()  # set if the worker ends without being asked to
        self.shut_down = threading.Event()  # set by the shutdown transition: main then exits

    def on_configure(self, state) -> TransitionCallbackReturn:
        return self._transition("configure", self._configure)

    def on_activate(self, state) -> TransitionCallbackReturn:
        return self._transition("activate", self._activate)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        return self._transition("deactivate", self.close)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        return self._transition("cleanup", self._cleanup)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.close()
        self._cleanup()
        self.shut_down.set()
        return TransitionCallbackReturn.SUCCESS

    def _transition(self, name: str, step) -> TransitionCallbackReturn:
        self.failure = None
        try:
            step()
        except (ParameterException, EngineError, CheckpointError, qos.QosOverrideError) as error:
            self.failure = one_line(error)
        except Exception as error:  # a bug: say where
            self.failure = describe_error(error)
        if self.failure is not None:
            if not self._param("autostart"):  # with autostart, main() says it, FATAL
                self.get_logger().error(f"{name} failed: {self.failure}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        self.engine = SegmentationEngine(EngineOptions.from_parameters(self._values()))
        declare_model_parameters(self, self.engine.class_names, self.engine.info.class_colors)
        self._warm_up_s = self._warm_up(len(self._param("cameras") or [""]))

    def _activate(self) -> None:
        names = self._param("cameras") or [""]  # "": the one camera on the node's own topics
        compressed = self._param("input_transport") == "compressed"
        self._decode = compressed_to_rgb if compressed else image_to_rgb
        self._latest = LatestFrames(len(names))
        self._batches = diagnostics.BatchStats()
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        try:
            for index, name in enumerate(names):
                receive = lambda msg, index=index: self._receive(index, msg)  # noqa: E731
                self._cameras.append(Camera(self, name, compressed, receive, self._warm_up_s))
        except Exception:  # a camera that cannot be set up (e.g. a bad QoS override): none stay half made
            self.close()
            raise
        self._worker = threading.Thread(target=self._work, name="road_seg_inference", daemon=True)
        self._worker.start()
        self._timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        engine = self.engine
        inputs = ", ".join(f"{camera.input.topic_name} ({camera.input.describe()})" for camera in self._cameras)
        self.get_logger().info(
            f"ready: {engine.checkpoint or engine.model_name} on {engine.device} ({engine.precision}, "
            f"{engine.backend}), input {inputs}, outputs {self._param('output_reliability')}, "
            f"depth {qos.input_depth(self._param('qos_depth'))} in, {self._param('qos_depth')} out"
        )

    def _warm_up(self, cameras: int) -> float:
        """Runs every batch size the cameras can make, off the first frames' clock (OpenVINO and torch.compile
        compile the model for each size on first use: seconds, in which a camera's frames would be dropped); the
        time one frame took once compiled."""
        frame = np.zeros((*self.engine.input_size, 3), np.uint8)
        self.engine.segment(frame)
        started = time.perf_counter()
        self.engine.segment(frame)
        one_frame_s = time.perf_counter() - started
        for size in range(2, cameras + 1):
            self.engine.segment_batch([frame] * size)
        return one_frame_s

    def close(self) -> None:
        """Stops the worker after the batch it is on (WORKER_STOP_TIMEOUT_S at most), then unsubscribes and stops
        publishing: the node is configured, not active."""
        if self._worker is not None:
            self._latest.close()
            self._worker.join(timeout=WORKER_STOP_TIMEOUT_S)
            self._worker = None
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        for camera in self._cameras:
            camera.close()
        self._cameras = []
        if self._diagnostics is not None:
            self.destroy_publisher(self._diagnostics)
            self._diagnostics = None

    def _cleanup(self) -> None:
        self.engine = None  # the model and its runtime are freed with it

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
            if param and param.problem and (reason := param.problem(parameter.value)):
                return SetParametersResult(successful=False, reason=reason)
            if parameter.name == "cameras" and (reason := camera_names_problem(parameter.value or [])):
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _receive(self, index: int, msg) -> None:
        camera = self._cameras[index]
        camera.received(msg.header)
        if self._latest.put(index, (msg, time.monotonic())):
            camera.stats.count("dropped")

    def _work(self) -> None:
        try:
            while (waiting := self._latest.take()) is not None:
                self._process(waiting)
        except BaseException as error:  # the thread ends either way: say why; main then exits non-zero
            if not self._latest.closed:
                self.get_logger().fatal(f"inference worker stopped: {describe_error(error)}; exiting")
                self.worker_stopped.set()

    def _process(self, waiting: list) -> None:
        """The frames waiting on the cameras, (camera index, (message, received at)): decoded one by one, then
        segmented as one batch."""
        frames = [self._take_up(self._cameras[index], *frame) for index, frame in waiting]
        self._segment([frame for frame in frames if frame is not None])

    def _take_up(self, camera: Camera, msg, received_at: float) -> DecodedFrame | None:
        """The frame decoded, or None: nobody listens to its camera (counted idle) or it is rejected."""
        wanted = camera.wanted()
        if not wanted:
            camera.stats.count("idle")
            return None
        started = time.perf_counter()
        try:
            rgb = self._decode(msg, max_pixels=self._param("max_input_pixels"))
        except ImageError as error:
            camera.reject(error.reason, str(error))
            return None
        except Exception as error:  # a bug or a frame nobody foresaw: that frame only
            camera.reject(diagnostics.INTERNAL_ERROR, describe_error(error))
            return None
        return DecodedFrame(camera, msg, received_at, started, rgb, wanted, (time.perf_counter() - started) * 1000.0)

    def _segment(self, frames: list) -> None:
        """The frames as one batch through the engine, each camera's outputs published; should the batch fail,
        each frame alone, so that only the camera whose frame fails loses it."""
        if not frames:
            return
        try:
            results = self.engine.segment_batch(
                [frame.rgb for frame in frames],
                with_color=[_wants(frame.wanted, "color") for frame in frames],
                with_overlay=[_wants(frame.wanted, "overlay") for frame in frames],
                overlay_alpha=self._param("overlay_alpha"),
            )  # colour and overlay come from the engine's own pass: on the GPU when it runs there
        except Exception as error:
            if len(frames) > 1:
                for frame in frames:
                    self._segment([frame])
            else:
                _reject_failure(frames[0].camera, error)
            return
        self._batches.record(len(frames))
        for frame, segmentation in zip(frames, results):
            try:
                self._publish(frame, segmentation, len(frames))
            except Exception as error:
                _reject_failure(frame.camera, error)

    def _publish(self, frame: DecodedFrame, segmentation, batch_size: int) -> None:
        camera, header = frame.camera, frame.msg.header
        timings = {"decode": frame.decode_ms, **segmentation.timings_ms}
        timings.pop("total", None)  # the node's total below spans decode to publish
        images = _image_outputs(segmentation, frame.wanted)
        publishing = time.perf_counter()
        published, quality = [], self._param("jpeg_quality")
        for name, pixels in images.items():
            encoding, fmt = IMAGE_OUTPUTS[name]
            if name in frame.wanted:
                camera.outputs[name].publish(array_to_image(pixels, encoding, header))
                published.append(name)
            if f"{name}/compressed" in frame.wanted:
                camera.outputs[f"{name}/compressed"].publish(
                    array_to_compressed(pixels, encoding, header, fmt, quality)
                )
                published.append(f"{name}/compressed")
        if "camera_info" in frame.wanted:
            info = camera.infos.for_label(header, *segmentation.labels.shape[:2])
            if info is not None:
                camera.outputs["camera_info"].publish(info)
                published.append("camera_info")
        done = time.perf_counter()
        timings["publish"] = (done - publishing) * 1000.0
        timings["total"] = (done - frame.started) * 1000.0
        timings["queue"] = (frame.started - frame.received_at) * 1000.0
        if "timing" in frame.wanted:
            camera.outputs["timing"].publish(
                self._timing_message(camera, header, timings, sorted(published), batch_size)
            )
        camera.stats.published((done - frame.received_at) * 1000.0)

    def _timing_message(self, camera: Camera, header, timings: dict, outputs: list, batch_size: int):
        stamp = stamp_ns(header)
        age_ms = (self.get_clock().now().nanoseconds - stamp) / 1e6 if stamp else math.nan
        return diagnostics.status_array(
            DiagnosticStatus.OK,
            camera.timing_name,
            f"frame {header.frame_id}",
            str(self.engine.device),
            diagnostics.timing_values(timings, age_ms, outputs, batch_size),
            header,
        )

    def _publish_diagnostics(self) -> None:
        """One status per camera and, with several cameras, the engine's (for one camera it is in its status)."""
        engine = self.engine
        device = str(engine.device)
        engine_values = {
            "device": engine.device,
            "precision": engine.precision,
            "backend": engine.backend,
            "model": engine.model_name,
        }
        min_fps = self._param("min_fps")
        single = len(self._cameras) == 1 and not self._cameras[0].name
        statuses = [camera.status(min_fps, device, engine_values if single else {}) for camera in self._cameras]
        sizes, window = self._batches.take_window()
        if not single:
            names = ",".join(camera.name for camera in self._cameras)
            values = {**engine_values, "cameras": names, **diagnostics.engine_values(sizes, window)}
            message = f"{len(self._cameras)} cameras, {values['frames_per_batch']} frames per batch"
            name = f"{self.get_fully_qualified_name()}: engine"
            statuses.append(diagnostics.status(DiagnosticStatus.OK, name, message, device, values))
        array = DiagnosticArray(status=statuses)
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)


def _reject_failure(camera: Camera, error: Exception) -> None:
    """A frame the engine or publishing failed on: a RuntimeError from the runtime (e.g. CUDA out of memory) is an
    inference error, anything else a bug or a frame nobody foresaw."""
    reason = diagnostics.INFERENCE_ERROR if isinstance(error, RuntimeError) else diagnostics.INTERNAL_ERROR
    camera.reject(reason, describe_error(error))


def main(args=None) -> int:
    """Runs the node until SIGINT or SIGTERM (exit 0) or a stopped worker (exit 1); 1 if it cannot start."""
    # Our own handlers only set a flag: rclpy's default raises KeyboardInterrupt wherever the main thread
    # is, even inside converting a received message, which then surfaces as a traceback.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    apply_dds_profile()
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except rclpy_implementation.RCLError as error:  # e.g. --ros-args naming a params file that does not parse
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {one_line(error)}")
        return 1
    try:
        node = RoadSegNode()
    except ParameterException as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {one_line(error)}")
        rclpy.try_shutdown()
        return 1
    if node.get_parameter("autostart").value and not _start(node):
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {node.failure}")
        node.destroy_node()
        rclpy.try_shutdown()
        return 1
    executor = fast_executor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok() and not node.worker_stopped.is_set() and not node.shut_down.is_set():
            spin_once(executor, node)
    finally:
        node.close()  # the worker finishes its frame while it can still publish
        node.destroy_node()
        rclpy.try_shutdown()
    exit_now(EXIT_WORKER_STOPPED if node.worker_stopped.is_set() else 0)


def _start(node: RoadSegNode) -> bool:
    """configure, then activate; False (``node.failure`` says why) when either fails."""
    success = TransitionCallbackReturn.SUCCESS
    return node.trigger_configure() == success and node.trigger_activate() == success


if __name__ == "__main__":
    sys.exit(main())
