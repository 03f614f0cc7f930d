"""N cameras through one road_seg_node against N separate nodes (``road-seg-bench --node [HxW] --cameras N``).

This process plays N cameras: each publishes a HxW rgb8 frame at ``--rate`` Hz
(reliable, depth 1: a camera driver's default), the cameras staggered over the
period, and subscribes to its labels (only labels: the node computes nothing
else). First one node with ``cameras: [cam0, ...]`` serves them all (camK/image
in, /road_seg/camK/label out); then N single-camera nodes in namespaces /camK
(the same camK/image in, /camK/road_seg/label out). Each setup is measured for
``--duration`` seconds once every camera has been answered: per camera, output
FPS and latency (``publish`` to the label's callback) p50 / p95; for the node
processes together, CPU time over the window (user + system, /proc) and resident
memory at its end (RSS, and the peak). Before the nodes start, this process
times the engine the node would run (same device, backend and precision) on one
frame and on a batch of N, as the multi-camera node runs them.
"""

import os
import time
from pathlib import Path

from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from ..core.engine import SegmentationEngine
from ..core.frames import synthetic_frames
from ..core.options import EngineOptions
from ..core.resources import NODE_NAME
from ..ros.client import NodeProcess, RosClient
from ..ros.image_conversion import rgb_to_image
from ..ros.runtime import private_domain
from .batch_bench import BATCH_REPS, batch_cost, batch_sentence, batch_target_line
from .bench_environment import environment
from .bench_report import fmt_load
from .node_bench import NodeBenchError, percentile_pair

START_TIMEOUT_S = 180.0  # N nodes loading a model at once on a small CPU
DRAIN_S = 1.0  # after the last frame, for its label to arrive


def camera_names(count: int) -> list[str]:
    return [f"cam{index}" for index in range(count)]


class Cameras(RosClient):
    """N cameras publishing frames and collecting the arrival time of each label, by frame_id."""

    def __init__(self, names, label_topics, size):
        # The Python executor: rclpy's events executor, spun in a thread of its own, took a whole core here and
        # delivered no label.
        super().__init__("road_seg_cameras_bench", executor_factory=SingleThreadedExecutor)
        camera_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        label_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.names = list(names)
        self.publishers = {name: self.node.create_publisher(Image, f"/{name}/image", camera_qos) for name in names}
        self.messages = {name: rgb_to_image(rgb) for name, rgb in zip(names, synthetic_frames(size, len(names)))}
        self.sent, self.arrived = {}, {}
        for topic in label_topics:
            self.node.create_subscription(Image, topic, self._on_label, label_qos)
        self.spin_in_background()

    def _on_label(self, msg) -> None:
        self.arrived[msg.header.frame_id] = time.perf_counter()

    def publish(self, name: str, frame_id: str) -> None:
        msg = self.messages[name]
        msg.header.frame_id = frame_id
        self.sent[frame_id] = time.perf_counter()
        self.publishers[name].publish(msg)

    def wait_until_served(self, nodes: list[NodeProcess]) -> None:
        """Until every camera has been answered once (the nodes load the model; discovery takes a moment)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        waiting, attempt = set(self.names), 0
        while waiting:
            for node in nodes:
                if reason := node.exit_reason():
                    raise NodeBenchError(reason)
            if time.monotonic() > deadline:
                raise NodeBenchError(f"{', '.join(sorted(waiting))} not answered within {START_TIMEOUT_S:.0f} s")
            attempt += 1
            for name in waiting:
                self.publish(name, f"{name}-start-{attempt}")
            time.sleep(0.5)
            waiting = {name for name in waiting if f"{name}-start-{attempt}" not in self.arrived}

    def play(self, rate_hz: float, seconds: float) -> list[str]:
        """Every camera at ``rate_hz`` for ``seconds``, staggered over the period; the frame ids sent."""
        period, frame_ids = 1.0 / rate_hz, []
        start = time.perf_counter()
        for tick in range(int(seconds * rate_hz)):
            for index, name in enumerate(self.names):
                due = start + (tick + index / len(self.names)) * period
                time.sleep(max(0.0, due - time.perf_counter()))
                frame_ids.append(f"{name}-{tick}")
                self.publish(name, frame_ids[-1])
        time.sleep(DRAIN_S)
        return frame_ids


def node_parameters(config) -> dict:
    """The node's own choice of backend and precision for the device: what a user runs."""
    params = {"device": config.device, "precision": "auto", "backend": "auto"}
    if config.num_threads:
        params["num_threads"] = config.num_threads
    if config.checkpoint:
        params["model_path"] = str(config.checkpoint)
    return params


def run_setup(config, size, multi: bool, log_folder: Path) -> dict:
    """One node with every camera (``multi``) or one node per camera, measured as the module says."""
    names = camera_names(config.cameras)
    params = node_parameters(config)
    if multi:
        nodes = [NodeProcess(log_folder / "cameras.log", parameters={**params, "cameras": f"[{', '.join(names)}]"})]
        labels = [f"/{NODE_NAME}/{name}/label" for name in names]
    else:
        nodes = [NodeProcess(log_folder / f"{name}.log", parameters=params, namespace=f"/{name}") for name in names]
        labels = [f"/{name}/{NODE_NAME}/label" for name in names]
    cameras = Cameras(names, labels, size)
    try:
        cameras.wait_until_served(nodes)
        cpu_before, started = sum(node.cpu_seconds() for node in nodes), time.perf_counter()
        frame_ids = cameras.play(config.camera_rate, config.camera_seconds)
        window_s = time.perf_counter() - started
        cpu_s = sum(node.cpu_seconds() for node in nodes) - cpu_before
        memory = [node.memory() for node in nodes]
    finally:
        cameras.close()
        for node in nodes:
            node.process.terminate()
        for node in nodes:
            try:
                node.wait()
            except TimeoutError:
                pass  # killed; the measurements (or the error being raised) stand
    return {
        "setup": f"one node, {len(names)} cameras" if multi else f"{len(names)} nodes, one camera each",
        "nodes": len(nodes),
        "cameras": [camera_row(cameras, name, frame_ids, config.camera_seconds) for name in names],
        "cpu_s": cpu_s,
        "cpu_cores": cpu_s / window_s,
        "rss_mb": sum(rss for rss, _ in memory) / 2**20,
        "peak_rss_mb": sum(peak for _, peak in memory) / 2**20,
    }


def camera_row(cameras: Cameras, name: str, frame_ids: list, seconds: float) -> dict:
    sent = [frame_id for frame_id in frame_ids if frame_id.startswith(f"{name}-")]
    latencies = [(cameras.arrived[f] - cameras.sent[f]) * 1000.0 for f in sent if f in cameras.arrived]
    return {
        "camera": name,
        "sent": len(sent),
        "answered": len(latencies),
        "fps_out": len(latencies) / seconds,
        "latency_ms": percentile_pair(latencies) if latencies else None,
    }


def engine_batch_cost(config, size) -> dict:
    """The engine the node runs, on one frame and on a batch of ``config.cameras``."""
    options = EngineOptions(device=config.device, num_threads=config.num_threads or 0)
    engine = SegmentationEngine(options.with_changes(checkpoint=str(config.checkpoint) if config.checkpoint else None))
    frames = synthetic_frames(size, count=config.cameras)
    return batch_cost(engine, frames, config.warmup, min(config.reps, BATCH_REPS))


def measure_cameras(config, log_folder: Path | None = None) -> list:
    """Per frame size in ``config.node_sizes``: the engine's batch cost, then one node against N nodes."""
    private_domain()
    log_folder = log_folder or Path(f"/tmp/road_seg_bench_cameras_{os.getpid()}")
    log_folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in config.node_sizes:
        cost = engine_batch_cost(config, size)
        setups = [run_setup(config, size, multi, log_folder) for multi in (True, False)]
        rows.append(
            {"size": f"{size[0]}x{size[1]}", "rate_hz": config.camera_rate, "batch_cost": cost, "setups": setups}
        )
    return rows


def cameras_markdown(rows: list, cameras: int, seconds: float) -> list:
    lines = [
        "",
        f"## {cameras} cameras: one node against {cameras} nodes (localhost, FastDDS)",
        "",
        f"Each camera publishes a rgb8 frame at the rate below for {seconds:g} s; only labels are subscribed. "
        "Latency: `publish` to the label's callback in this process. CPU: user + system time of the node "
        "processes over the window (cores = CPU s / window s; per answered frame: it includes receiving the "
        "frames that were dropped); RSS summed over the node processes. On a machine shared with other work, "
        "N processes get a larger share of the CPU than one: compare the per-frame CPU, and measure on a "
        "quiet machine.",
    ]
    for row in rows:
        cost = row["batch_cost"]
        lines += [
            "",
            f"### {row['size']} at {row['rate_hz']:g} Hz per camera",
            "",
            "| setup | camera | sent | answered | FPS out | latency p50 / p95 ms |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for setup in row["setups"]:
            for camera in setup["cameras"]:
                latency = camera["latency_ms"]
                shown = f"{latency['p50']:.1f} / {latency['p95']:.1f}" if latency else "-"
                lines.append(
                    f"| {setup['setup']} | {camera['camera']} | {camera['sent']} | {camera['answered']} "
                    f"| {camera['fps_out']:.1f} | {shown} |"
                )
        lines += [
            "",
            "| setup | processes | CPU s (cores) | CPU ms per answered frame | RSS MB | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for setup in row["setups"]:
            answered = sum(camera["answered"] for camera in setup["cameras"])
            per_frame = f"{setup['cpu_s'] * 1000.0 / answered:.1f}" if answered else "-"
            lines.append(
                f"| {setup['setup']} | {setup['nodes']} | {setup['cpu_s']:.1f} ({setup['cpu_cores']:.2f}) "
                f"| {per_frame} | {setup['rss_mb']:.0f} | {setup['peak_rss_mb']:.0f} |"
            )
        lines += [
            "",
            f"Engine: {batch_sentence(cost)}",
        ]
    return lines


def cameras_target_lines(rows: list, cameras: int) -> list:
    """The issue's goals, met or missed, from this run's numbers."""
    lines = []
    for row in rows:
        one, separate = row["setups"]
        cheaper = one["cpu_s"] < separate["cpu_s"] and one["rss_mb"] < separate["rss_mb"]
        lines.append(
            f"- {row['size']}: one node serves {cameras} cameras with less CPU time and memory than {cameras} nodes: "
            f"CPU {one['cpu_s']:.1f} s against {separate['cpu_s']:.1f} s, RSS {one['rss_mb']:.0f} MB against "
            f"{separate['rss_mb']:.0f} MB, {'met' if cheaper else 'missed'}."
        )
        if row["batch_cost"]["device"].startswith("cuda"):
            lines.append(batch_target_line(row["batch_cost"], row["size"]))
    return lines


def measure_report(config) -> dict:
    """The whole report: the machine, its load around the run, and ``measure_cameras``."""
    load_before = os.getloadavg()
    rows = measure_cameras(config)
    return {
        "environment": environment(config),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cameras": rows,
    }


def report_markdown(report: dict, command: str) -> str:
    env, rows = report["environment"], report["cameras"]
    cameras = len(rows[0]["setups"][0]["cameras"])
    lines = [
        "# Cameras benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {env['cpu']} ({env['cpu_count']} cores), GPU {env['gpu'] or 'none'}; torch {env['torch']}, "
        f"onnxruntime {env['onnxruntime']}, openvino {env.get('openvino', 'none')}, Python {env['python']}.",
        f"Load average (1, 5, 15 min) before: {fmt_load(report['load_average_before'])}, "
        f"after: {fmt_load(report['load_average_after'])}.",
        *cameras_markdown(rows, cameras, env["camera_seconds"]),
        "",
        "## Targets",
        "",
        *cameras_target_lines(rows, cameras),
    ]
    return "\n".join(lines) + "\n"
