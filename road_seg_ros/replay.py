"""``road-seg-replay``: a camera bag through the live node (or the engine offline), scored and reported.

    road-seg-replay bags/camvid_seq05vd.mcap --out out/

Live mode starts ``road_seg_node`` with the params file (``--connect`` uses a
node already running instead), publishes the bag's image messages exactly as
recorded, original stamps included, over real ROS 2 topics, and matches the
node's labels to the frames and their ground truth by stamp. By default
(``--as-fast-as-possible``) each frame is sent once the previous frame's label
is back, so the run measures the node and nothing is lost on this side;
``--rate R`` plays at R times the recorded speed and counts what the node
drops. ``--offline`` runs the engine over the bag directly, with no ROS graph.

DIR gets report.md, report.json, a latency histogram, per-class IoU bars and
an overlay mosaic; ``--record`` also writes the input and the node's outputs
to a bag for RViz or Foxglove.
"""

import argparse
import itertools
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from tqdm import tqdm

from .bags import COMPRESSED_TYPE, TYPESTORE, BagError, BagRecorder, CameraBag, bundled_bag, decode_ground_truth
from .checkpoint import CheckpointError
from .engine import EngineError, SegmentationEngine, default_checkpoint
from .node import NODE_NAME, PARAMETERS, PARAMS_FILE_NAME, apply_dds_profile, config_file, fast_executor
from .replay_report import ReplayTally, format_summary, write_report

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
FRAME_TIMEOUT_S = 10.0  # a frame whose label is not back by then counts as dropped
STARTUP_TIMEOUT_S = 120.0  # the node imports torch and loads its model before it answers
PROBE_INTERVAL_S = 0.5
OUTPUTS_GRACE_S = 2.0  # how long the last frame's colour, overlay and timing may trail its label
DEFAULT_OUT = "out"


class ReplayError(RuntimeError):
    """The replay cannot go on; the message is one line naming why."""


def node_parameters(params_file) -> dict:
    """The node's ros__parameters in a params file (its own section, else the /** wildcard)."""
    try:
        sections = yaml.safe_load(Path(params_file).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ReplayError(f"cannot read params file {params_file}: {error}") from None
    for key in (NODE_NAME, f"/{NODE_NAME}", "/**"):
        if isinstance(sections.get(key), dict):
            return dict(sections[key].get("ros__parameters") or {})
    return {}


def run_replay(
    bag,
    out_dir=DEFAULT_OUT,
    topic=None,
    gt_topic=None,
    rate=None,
    offline=False,
    record=None,
    params_file=None,
    parameters=None,
    connect=False,
    frame_timeout_s=FRAME_TIMEOUT_S,
    progress=None,
    on_output=None,
) -> dict:
    """Replays ``bag`` and writes the report to ``out_dir``; returns the report (report.json's content).

    ``rate`` None means as fast as possible (lockstep with the node); otherwise
    a multiple of the recorded speed. ``parameters`` (model_path, device, ...)
    override the params file's, for the node and the offline engine alike.
    ``on_output(stamp_ns, labels)`` sees every output, for callers that
    compare runs. ``progress`` None shows a bar on terminals only.
    """
    if rate is not None and rate <= 0:
        raise ReplayError(f"rate must be positive, got {rate}")
    params_file = params_file or config_file(PARAMS_FILE_NAME)
    if params_file is None:
        raise ReplayError(f"no {PARAMS_FILE_NAME} in config/ or the package share; pass --params-file")
    defaults = {param.name: param.default for param in PARAMETERS}
    settings = {**defaults, **node_parameters(params_file), **(parameters or {})}
    with CameraBag(bag, topic, gt_topic) as camera_bag:
        tally = ReplayTally(camera_bag.frame_count)
        context = {
            "mode": "offline" if offline else "live",
            "bag": str(bag),
            "topic": camera_bag.topic,
            "msgtype": camera_bag.msgtype,
            "gt_topic": camera_bag.gt_topic,
            "pacing": "as fast as possible" if rate is None else f"{rate:g}x recorded speed",
            "model": str(settings["model_path"] or default_checkpoint()),
        }
        if offline:
            context["latency_definition"] = "engine.segment per frame, decoded frame in, labels out"
            _replay_offline(camera_bag, tally, settings, progress, on_output)
        else:
            context["latency_definition"] = "publish to label received, over ROS 2"
            out_dir = Path(out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            with LiveReplay(camera_bag, tally, record, frame_timeout_s, on_output) as live:
                if not connect:
                    live.start_node(params_file, parameters or {}, out_dir / "node.log")
                live.run(rate, progress)
    report = tally.report(**context)
    report["files"] = {key: str(path) for key, path in write_report(report, tally, out_dir).items()}
    return report


def offline_engine(settings: dict) -> SegmentationEngine:
    """The engine as road_seg_node builds it from the same parameters, so both modes run the model alike."""
    return SegmentationEngine(
        checkpoint=settings["model_path"] or None,
        device=settings["device"],
        precision=settings["precision"],
        num_threads=settings["num_threads"] or None,
        backend=settings["backend"],
    )


def _replay_offline(camera_bag, tally, settings, progress, on_output) -> None:
    engine = offline_engine(settings)
    frames = camera_bag.frames()
    first = next(frames)
    engine.segment(first.rgb)  # warm-up, so the numbers are the steady state
    started = time.perf_counter()
    for index, frame in enumerate(_progress(itertools.chain([first], frames), camera_bag, progress)):
        tally.frames_sent += 1
        began = time.perf_counter()
        labels = engine.segment(frame.rgb).labels
        tally.add_output(index, frame, labels, (time.perf_counter() - began) * 1000.0)
        if on_output is not None:
            on_output(frame.stamp_ns, labels)
    tally.elapsed_s = time.perf_counter() - started


def _progress(frames, camera_bag, progress):
    return tqdm(
        frames,
        total=camera_bag.frame_count,
        unit="frame",
        desc="replay",
        disable=None if progress is None else not progress,
    )


def node_command(params_file, parameters: dict, topic: str, msgtype: str) -> list[str]:
    """The command line of road_seg_node with ``parameters`` over the params file, listening on ``topic``."""
    command = [sys.executable, "-m", "road_seg_ros.node", "--ros-args", "--params-file", str(params_file)]
    if msgtype == COMPRESSED_TYPE:
        command += ["-p", "input_transport:=compressed", "-r", f"image/compressed:={topic}"]
    else:
        command += ["-p", "input_transport:=raw", "-r", f"image:={topic}"]
    for name, value in parameters.items():
        command += ["-p", f"{name}:={value}"]
    return command


class LiveReplay:
    """Publishes a bag's frames to the node over ROS 2 and collects its outputs by stamp."""

    def __init__(self, camera_bag, tally, record, frame_timeout_s, on_output):
        apply_dds_profile()  # before rclpy.init: camera-sized frames need the large-data transports
        self.bag, self.tally, self.frame_timeout_s, self.on_output = camera_bag, tally, frame_timeout_s, on_output
        self.recorder = BagRecorder(record) if record else None
        self.process = None
        self.pending = {}  # stamp -> (index, frame, sent at); frames whose label is not back yet
        self.probe_stamp = None
        self.probe_answered = False
        self.last_output_at = 0.0
        self.rclpy_context = rclpy.Context()
        # No rclpy signal handlers: Ctrl-C stays a KeyboardInterrupt, which stops the node on the way out.
        rclpy.init(args=[], context=self.rclpy_context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("road_seg_replay", context=self.rclpy_context)
        self.executor = fast_executor(context=self.rclpy_context)
        self.executor.add_node(self.node)
        # Reliable publishing reaches best-effort subscribers too; the node's own QoS decides what it drops.
        message_class = CompressedImage if camera_bag.msgtype == COMPRESSED_TYPE else Image
        self.publisher = self.node.create_publisher(
            message_class, camera_bag.topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        # Best effort matches the node's sensor-data publishers; a deep queue keeps this side from losing outputs.
        outputs_qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.outputs = ("label", "timing", "color", "overlay") if self.recorder else ("label", "timing")
        self.output_counts = Counter()
        self.subscriptions = [self._subscribe(name, outputs_qos) for name in self.outputs]

    def _subscribe(self, name, qos):
        message_class = DiagnosticArray if name == "timing" else Image
        handler = {"label": self._on_label, "timing": self._on_timing}.get(name)

        def callback(rawdata: bytes):
            received_at = time.perf_counter()
            message = TYPESTORE.deserialize_cdr(rawdata, OUTPUT_TYPES[name])
            stamp = _stamp(message)
            if stamp == self.probe_stamp:
                self.probe_answered = self.probe_answered or name == "label"
                return
            self.output_counts[name] += 1
            if self.recorder is not None:
                self.recorder.write(OUTPUT_TOPICS[name], OUTPUT_TYPES[name], stamp, rawdata)
            if handler is not None:
                handler(message, received_at)

        return self.node.create_subscription(message_class, OUTPUT_TOPICS[name], callback, qos, raw=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop_node()
        self.node.destroy_node()
        self.executor.shutdown()
        self.rclpy_context.try_shutdown()
        if self.recorder is not None:
            self.recorder.close()  # also after an error or Ctrl-C: what was recorded stays readable

    # -- the node ---------------------------------------------------------------------------

    def start_node(self, params_file, parameters: dict, log_path) -> None:
        """Runs road_seg_node with the params file, its input remapped to the bag's topic, output to log_path."""
        command = node_command(params_file, parameters, self.bag.topic, self.bag.msgtype)
        self.log_path = log_path
        self.log = open(log_path, "w")  # closed in stop_node
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def stop_node(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        self.process = None

    def _check_node_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            lines = Path(self.log_path).read_text().strip().splitlines()
            raise ReplayError(
                f"road_seg_node exited with code {self.process.returncode}: {lines[-1] if lines else 'no output'}"
                f" (log: {self.log_path})"
            )

    # -- the run ----------------------------------------------------------------------------

    def run(self, rate, progress) -> None:
        frames = self.bag.frames()
        first = next(frames)
        self._wait_for_node(first)
        started = time.perf_counter()
        bar = _progress(itertools.chain([first], frames), self.bag, progress)
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
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        while not done():
            self._check_node_alive()
            remaining = 0.05 if deadline is None else min(0.05, deadline - time.perf_counter())
            if remaining <= 0:
                return
            self.executor.spin_once(timeout_sec=remaining)

    # -- outputs ----------------------------------------------------------------------------

    def _on_label(self, message, received_at) -> None:
        stamp = _stamp(message)
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


def _stamp(message) -> int:
    return message.header.stamp.sec * 10**9 + message.header.stamp.nanosec


def _restamped(frame, stamp_ns: int) -> bytes:
    message = TYPESTORE.deserialize_cdr(frame.rawdata, frame.msgtype)
    message.header.stamp = TYPESTORE.types["builtin_interfaces/msg/Time"](
        sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9
    )
    return bytes(TYPESTORE.serialize_cdr(message, frame.msgtype))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="road-seg-replay", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "bag",
        nargs="?",
        default=str(bundled_bag()),
        help="rosbag2 directory or .mcap/.db3 file (default: the bundled drive)",
    )
    parser.add_argument("--topic", help="image topic (default: /camera/image_raw[/compressed] or the only one)")
    parser.add_argument("--gt-topic", help="ground-truth topic, mono8 class ids (default: /camera/ground_truth)")
    pacing = parser.add_mutually_exclusive_group()
    pacing.add_argument("--rate", type=float, metavar="R", help="play at R times the recorded speed; count drops")
    pacing.add_argument(
        "--as-fast-as-possible", action="store_true", help="send each frame once the last one's label is back (default)"
    )
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help="report folder (default: out)")
    parser.add_argument("--record", metavar="OUT_BAG", help="also write the input and the node's outputs to this bag")
    parser.add_argument("--offline", action="store_true", help="run the engine directly, without ROS")
    parser.add_argument("--params-file", help="the node's params (default: config/road_seg.yaml)")
    parser.add_argument("--checkpoint", help="model, overriding the params file's")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), help="device, overriding the params file's")
    parser.add_argument("--connect", action="store_true", help="use a road_seg_node already running")
    parser.add_argument("--timeout", type=float, default=FRAME_TIMEOUT_S, help="seconds to wait for each label")
    args = parser.parse_args(argv)
    if args.offline and (args.record or args.connect or args.rate):
        parser.error("--offline runs without ROS: --record, --connect and --rate need the live node")
    return args


def _exit_on_sigterm(*_):
    sys.exit("road-seg-replay: terminated")  # SystemExit unwinds the with-blocks: the node stops, the record closes


def main(argv=None):
    args = parse_args(argv)
    previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        report = run_replay(
            args.bag,
            args.out,
            topic=args.topic,
            gt_topic=args.gt_topic,
            rate=args.rate,
            offline=args.offline,
            record=args.record,
            params_file=args.params_file,
            parameters={k: v for k, v in (("model_path", args.checkpoint), ("device", args.device)) if v},
            connect=args.connect,
            frame_timeout_s=args.timeout,
        )
    except (BagError, ReplayError, CheckpointError, EngineError) as error:
        sys.exit(f"road-seg-replay: {error}")
    except KeyboardInterrupt:
        sys.exit("road-seg-replay: interrupted")
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    print(format_summary(report))
    print(
        f"report: {report['files']['markdown']}"
        + (f", mosaic: {report['files']['mosaic']}" if "mosaic" in report["files"] else "")
    )


if __name__ == "__main__":
    main()
