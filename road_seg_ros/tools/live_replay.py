"""The live half of ``road-seg-replay``: a bag's frames to road_seg_node over ROS 2, its outputs back by stamp."""

import itertools
import time
from collections import Counter

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from ..core.frames import stamp_ns
from ..core.resources import NODE_NAME
from ..ros.client import NodeProcess, RosClient
from ..ros.runtime import apply_dds_profile
from .bags import COMPRESSED_TYPE, TYPESTORE, BagRecorder, decode_ground_truth, ros_time
from .replay_report import ReplayError

OUTPUT_TOPICS = {
    "label": f"/{NODE_NAME}/label",
    "color": f"/{NODE_NAME}/color",
    "overlay": f"/{NODE_NAME}/overlay",
    "timing": f"/{NODE_NAME}/timing",
}
OUTPUT_TYPES = {
    "label": "sensor_msgs/msg/Image",
    "color": "sensor_msgs/msg/Image",
    "overlay": "sensor_msgs/msg/Image",
    "timing": "diagnostic_msgs/msg/DiagnosticArray",
}
STARTUP_TIMEOUT_S = 120.0  # the node imports torch and loads its model before it answers
PROBE_INTERVAL_S = 0.5
OUTPUTS_GRACE_S = 2.0  # how long the last frame's colour, overlay and timing may trail its label


def node_remaps(topic: str, msgtype: str) -> tuple[dict, dict]:
    """The node's input settings and remapping for listening on a bag's ``topic``."""
    if msgtype == COMPRESSED_TYPE:
        return {"input_transport": "compressed"}, {"image/compressed": topic}
    return {"input_transport": "raw"}, {"image": topic}


class LiveReplay:
    """Publishes a bag's frames to the node over ROS 2 and collects its outputs by stamp."""

    def __init__(self, camera_bag, tally, record, frame_timeout_s, on_output, progress):
        apply_dds_profile()  # before rclpy.init: camera-sized frames need the large-data transports
        self.bag, self.tally, self.frame_timeout_s, self.on_output = camera_bag, tally, frame_timeout_s, on_output
        self.progress = progress
        self.recorder = BagRecorder(record) if record else None
        self.node_process = None
        self.pending = {}  # stamp -> (index, frame, sent at); frames whose label is not back yet
        self.probe_stamp = None
        self.probe_answered = False
        self.last_output_at = 0.0
        self.client = RosClient("road_seg_replay")
        # Reliable, as camera drivers publish: the node's best_available input hears it reliably, so no frame
        # is lost on the way; what the node drops is its own choice (newest frame wins), and counted.
        message_class = CompressedImage if camera_bag.msgtype == COMPRESSED_TYPE else Image
        self.publisher = self.client.node.create_publisher(
            message_class, camera_bag.topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        # Best effort matches any publisher; a deep queue keeps this side from losing outputs.
        outputs_qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.outputs = ("label", "timing", "color", "overlay") if self.recorder else ("label", "timing")
        self.output_counts = Counter()
        for name in self.outputs:
            self._subscribe(name, outputs_qos)

    def _subscribe(self, name, qos):
        message_class = DiagnosticArray if name == "timing" else Image
        handler = {"label": self._on_label, "timing": self._on_timing}.get(name)

        def callback(rawdata: bytes):
            received_at = time.perf_counter()
            message = TYPESTORE.deserialize_cdr(rawdata, OUTPUT_TYPES[name])
            stamp = stamp_ns(message.header)
            if stamp == self.probe_stamp:
                self.probe_answered = self.probe_answered or name == "label"
                return
            self.output_counts[name] += 1
            if self.recorder is not None:
                self.recorder.write(OUTPUT_TOPICS[name], OUTPUT_TYPES[name], stamp, rawdata)
            if handler is not None:
                handler(message, received_at)

        self.client.node.create_subscription(message_class, OUTPUT_TOPICS[name], callback, qos, raw=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop_node()
        self.client.close()
        if self.recorder is not None:
            self.recorder.close()  # also after an error or Ctrl-C: what was recorded stays readable

    # -- the node ---------------------------------------------------------------------------

    def start_node(self, params_file, parameters: dict, log_path) -> None:
        """Runs road_seg_node with the params file, its input remapped to the bag's topic, output to log_path."""
        transport, remaps = node_remaps(self.bag.topic, self.bag.msgtype)
        self.node_process = NodeProcess(log_path, params_file, {**transport, **parameters}, remaps=remaps)

    def stop_node(self) -> None:
        if self.node_process is not None:
            try:
                self.node_process.stop(timeout=10)
            except TimeoutError:
                pass  # killed: the replay's own error (if any) is the one to report
            self.node_process = None

    def _check_node_alive(self) -> None:
        reason = self.node_process and self.node_process.exit_reason()
        if reason:
            raise ReplayError(f"{reason} (log: {self.node_process.log_path})")

    # -- the run ----------------------------------------------------------------------------

    def run(self, rate) -> None:
        frames = self.bag.frames()
        first = next(frames)
        self._wait_for_node(first)
        started = time.perf_counter()
        bar = self.progress(itertools.chain([first], frames))
        if rate is None:
            self._run_lockstep(bar)
        else:
            self._run_paced(bar, rate, first.stamp_ns, started)
        self.tally.elapsed_s = self.last_output_at - started if self.tally.latencies_ms else 0.0
        # The node publishes a frame's other outputs just after its label: let the last ones arrive.
        labels = self.output_counts["label"]
        self._spin_until(lambda: min(self.output_counts[name] for name in self.outputs) >= labels, OUTPUTS_GRACE_S)

    def _run_lockstep(self, frames) -> None:
        for index, frame in enumerate(frames):
            self._send(index, frame)
            self._spin_until(lambda stamp=frame.stamp_ns: stamp not in self.pending, self.frame_timeout_s)
            self.pending.pop(frame.stamp_ns, None)  # no label in time: dropped

    def _run_paced(self, frames, rate, first_stamp_ns, started) -> None:
        for index, frame in enumerate(frames):
            due = started + (frame.stamp_ns - first_stamp_ns) / 1e9 / rate
            self._spin_until(lambda due=due: time.perf_counter() >= due, None)
            self._send(index, frame)
        self._spin_until(lambda: not self.pending, self.frame_timeout_s)

    def _send(self, index, frame) -> None:
        if frame.stamp_ns in self.pending:
            raise ReplayError(f"two frames share stamp {frame.stamp_ns}; outputs are matched to frames by stamp")
        if self.recorder is not None:
            self.recorder.write(self.bag.topic, frame.msgtype, frame.stamp_ns, frame.rawdata)
        self.pending[frame.stamp_ns] = (index, frame, time.perf_counter())
        self.tally.frames_sent += 1
        self.publisher.publish(frame.rawdata)

    def _wait_for_node(self, first) -> None:
        """Sends a re-stamped copy of the first frame until the node answers it.

        Discovery is then complete in both directions and the node's first
        (slow) inference is behind it, so neither counts against the run.
        """
        self.probe_stamp = first.stamp_ns - 1
        probe = _restamped(first, self.probe_stamp)
        deadline = time.perf_counter() + STARTUP_TIMEOUT_S
        while not self.probe_answered:
            if time.perf_counter() > deadline:
                raise ReplayError(
                    f"no label on {OUTPUT_TOPICS['label']} for a frame sent on {self.bag.topic} within "
                    f"{STARTUP_TIMEOUT_S:.0f} s: is road_seg_node running with its input on that topic?"
                )
            if self.publisher.get_subscription_count() > 0:
                self.publisher.publish(probe)
            self._spin_until(lambda: self.probe_answered, PROBE_INTERVAL_S)

    def _spin_until(self, done, timeout_s) -> None:
        self.client.spin_until(done, timeout_s, check=self._check_node_alive)

    # -- outputs ----------------------------------------------------------------------------

    def _on_label(self, message, received_at) -> None:
        stamp = stamp_ns(message.header)
        sent = self.pending.pop(stamp, None)
        if sent is None:
            return  # a frame already given up on, or another publisher's
        # The node answers frames in order and skips stale ones: an older frame still pending was dropped.
        for older in [pending for pending in self.pending if pending < stamp]:
            del self.pending[older]
        index, frame, sent_at = sent
        labels = decode_ground_truth(message, OUTPUT_TOPICS["label"])
        self.last_output_at = received_at
        self.tally.add_output(index, frame, labels, (received_at - sent_at) * 1000.0)
        if self.on_output is not None:
            self.on_output(stamp, labels)

    def _on_timing(self, message, _received_at) -> None:
        """Keeps the node's per-stage times (``<stage>_ms`` values); age_ms compares with the bag's old stamps."""
        timings = {}
        for status in message.status:
            for item in status.values:
                if item.key.endswith("_ms") and item.key != "age_ms":
                    timings[item.key.removesuffix("_ms")] = float(item.value)
        self.tally.add_node_timings(timings)


def _restamped(frame, nanoseconds: int) -> bytes:
    message = TYPESTORE.deserialize_cdr(frame.rawdata, frame.msgtype)
    message.header.stamp = ros_time(nanoseconds)
    return bytes(TYPESTORE.serialize_cdr(message, frame.msgtype))
