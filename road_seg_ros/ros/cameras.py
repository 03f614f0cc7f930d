"""The node's cameras: each one's input, outputs and frame statistics, and the mailbox the worker takes frames from.

With no camera names the node has one camera on today's topics (``image`` in, ``~/label`` ... out). With names,
camera C reads ``C/image`` and writes ``~/C/label`` ...: relative names, so namespaces and remapping apply.
"""

import math
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.exceptions import InvalidNamespaceException
from rclpy.validate_namespace import validate_namespace
from sensor_msgs.msg import CompressedImage, Image

from . import diagnostics, qos

OUTPUTS = {"label": Image, "color": Image, "overlay": Image, "timing": DiagnosticArray}
REJECT_LOG_PERIOD_S = 10.0  # a bad stream logs each reason once, then at most this often


def camera_names_problem(names) -> str | None:
    """Why ``names`` cannot name cameras (one line), or None: each must be a relative ROS name, e.g. ``front`` or
    ``rig/left`` (letters, digits and '_' in '/'-separated tokens, none starting with a digit), each only once."""
    for name in names:
        if not name:
            return "cameras: an empty name is not a camera name"
        if name[0] in "/~":
            return f"cameras: {name!r} must be a relative name (no leading '/' or '~'): its topics are the node's"
        try:
            validate_namespace(f"/{name}")  # a relative name's rules, checked as the namespace it would make
        except InvalidNamespaceException as error:
            reason = str(error).splitlines()[0].removeprefix("Invalid namespace: ").rstrip(":")
            return f"cameras: {name!r} is not a valid ROS name: {reason.replace('namespace must', 'it must', 1)}"
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        return f"cameras: each name once, got {', '.join(repeated)} more than once"
    return None


class LatestFrames:
    """One newest-frame slot per camera: a new frame replaces its camera's untaken one.

    The worker takes every waiting camera's frame at once, so each camera puts at most one frame into a batch
    and one that sends faster than the others cannot crowd them out; one that stops holds nobody up.
    """

    def __init__(self, count: int):
        self._ready = threading.Condition()
        self._slots = [None] * count
        self._closed = False

    def put(self, index: int, frame) -> bool:
        """Stores camera ``index``'s ``frame``; True when it overwrote an untaken one."""
        with self._ready:
            overwritten = self._slots[index] is not None
            self._slots[index] = frame
            self._ready.notify()
        return overwritten

    def take(self) -> list | None:
        """Waits for a frame; then every waiting one as (camera index, frame), in camera order. None once closed."""
        with self._ready:
            while not self._closed and all(frame is None for frame in self._slots):
                self._ready.wait()
            waiting = [(index, frame) for index, frame in enumerate(self._slots) if frame is not None]
            self._slots = [None] * len(self._slots)
        return None if self._closed else waiting

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class Camera:
    """One camera's input subscription, output publishers, frame counts and rejection log.

    ``name`` empty: the single camera, on the node's own topics, with today's status names.
    """

    def __init__(self, node, name: str, compressed: bool, receive, frame_s: float):
        self.name = name
        self._node = node
        prefix = f"{name}/" if name else ""
        output_qos = qos.profile(qos.POLICIES[node.get_parameter("output_reliability").value], self._depth())
        self.outputs = {
            output: node.create_publisher(msg_type, f"~/{prefix}{output}", output_qos)
            for output, msg_type in OUTPUTS.items()
        }
        self.input = qos.InputSubscription(
            node,
            CompressedImage if compressed else Image,
            f"{prefix}image/compressed" if compressed else f"{prefix}image",
            receive,
            node.get_parameter("qos_reliability").value,
            self._depth(),
        )
        self.stats = diagnostics.FrameStats(frame_s=frame_s)
        label = f"{name} " if name else ""
        self.status_name = f"{node.get_fully_qualified_name()}: {label}segmentation"
        self.timing_name = f"{node.get_fully_qualified_name()}: {label}frame timing"
        self._last_reject_log = {}

    def _depth(self) -> int:
        return self._node.get_parameter("qos_depth").value

    def wanted(self) -> set:
        """The outputs somebody subscribes to."""
        return {output for output, publisher in self.outputs.items() if publisher.get_subscription_count()}

    def reject(self, reason: str, message: str) -> None:
        """Counts a frame rejected for ``reason``; logs it once per reason, then at most every REJECT_LOG_PERIOD_S."""
        count = self.stats.count("rejected", reason)
        now = time.monotonic()
        if now - self._last_reject_log.get(reason, -math.inf) >= REJECT_LOG_PERIOD_S:
            self._last_reject_log[reason] = now
            camera = f"camera {self.name}: " if self.name else ""
            self._node.get_logger().warning(f"{camera}frame skipped ({reason}, {count} so far): {message}")

    def status(self, min_fps: float, hardware_id: str, extra_values: dict):
        """This camera's DiagnosticStatus for the window since the last one, ``extra_values`` after its own."""
        window, seconds, latencies = self.stats.take_window()
        fps_out = window["published"] / seconds
        topic = self.input.topic_name
        level, message = diagnostics.health(window, fps_out, min_fps, topic, self.stats.silent_s())
        values = {
            **diagnostics.summary_values(self.stats, window, seconds, latencies),
            **extra_values,
            "input_topic": topic,
        }
        return diagnostics.status(level, self.status_name, message, hardware_id, values)
