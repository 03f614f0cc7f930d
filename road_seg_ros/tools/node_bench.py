"""The node's own overhead over real ROS 2 on localhost (``road-seg-bench --node``).

road_seg_node runs as its own process; this one publishes a frame on
``image``, waits for its label on ``/road_seg/label`` and its stage timings
on ``/road_seg/timing``, and only then sends the next, so nothing queues.
Overhead = latency from just before ``publish`` to the label's callback,
minus the engine's own time for that frame (its preprocess, inference and
postprocess from the timing message): serialisation, DDS both ways,
decoding, the hand-over to the node's worker thread and the label message.
"""

import os
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from ..core.frames import synthetic_frames
from ..core.resources import NODE_NAME
from ..ros.client import NodeProcess, RosClient
from ..ros.image_conversion import rgb_to_image
from ..ros.runtime import private_domain

ENGINE_STAGES = ("preprocess", "inference", "postprocess")
NODE_STAGES = ("decode", "queue", "publish")
REPLY_TIMEOUT_S = 10.0
START_TIMEOUT_S = 120.0
MAX_FRAMES = 100


class NodeBenchError(RuntimeError):
    """The node did not start or answer; the message is one line."""


class OverheadClient(RosClient):
    """Publishes frames to the node and collects each one's label arrival time and timing values."""

    def __init__(self):
        super().__init__("road_seg_bench")
        # A camera driver's and RViz's default: the node's best_available input hears it reliably (REP 2003).
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.publisher = self.node.create_publisher(Image, "image", qos)
        self.node.create_subscription(Image, f"/{NODE_NAME}/label", self._on_label, qos)
        self.node.create_subscription(DiagnosticArray, f"/{NODE_NAME}/timing", self._on_timing, qos)
        self.label_at, self.timings = {}, {}

    def _on_label(self, msg) -> None:
        self.label_at[msg.header.frame_id] = time.perf_counter()

    def _on_timing(self, msg) -> None:
        for status in msg.status:
            values = {value.key: value.value for value in status.values}
            self.timings[msg.header.frame_id] = {key[:-3]: float(v) for key, v in values.items() if key.endswith("_ms")}

    def exchange(self, msg, timeout: float):
        """Publishes ``msg``; (sent time, label time, timings) once both replies are in, else None."""
        frame_id = msg.header.frame_id
        sent = time.perf_counter()
        self.publisher.publish(msg)
        if not self.spin_until(lambda: frame_id in self.label_at and frame_id in self.timings, timeout):
            return None
        return sent, self.label_at.pop(frame_id), self.timings.pop(frame_id)


def start_node(config, log_path: Path) -> NodeProcess:
    # The node's own choice of backend and precision for the device: what a user runs.
    params = {"device": config.device, "precision": "auto", "backend": "auto"}
    if config.num_threads:
        params["num_threads"] = config.num_threads
    if config.checkpoint:
        params["model_path"] = str(config.checkpoint)
    return NodeProcess(log_path, parameters=params)


def measure_node_overhead(config, log_path: Path | None = None) -> list:
    """Per frame size: latency, the engine's time and the overhead (p50, p95), for ``config.node_sizes``."""
    private_domain()
    log_path = log_path or Path(f"/tmp/road_seg_bench_node_{os.getpid()}.log")
    node = start_node(config, log_path)
    client = OverheadClient()
    try:
        wait_until_serving(client, node)
        return [measure_size(client, size, config) for size in config.node_sizes]
    finally:
        client.close()
        try:
            node.stop()
        except TimeoutError:
            pass  # killed; the measurements (or the error being raised) stand


def frame_message(rgb: np.ndarray, frame_id: str) -> Image:
    msg = rgb_to_image(rgb)
    msg.header.frame_id = frame_id
    return msg


def wait_until_serving(client: OverheadClient, node: NodeProcess) -> None:
    """Until the node answers a frame (it loads the model, and discovery takes a moment)."""
    rgb = synthetic_frames((64, 64), count=1)[0]
    deadline = time.monotonic() + START_TIMEOUT_S
    attempt = 0
    while time.monotonic() < deadline:
        if reason := node.exit_reason():
            raise NodeBenchError(reason)
        attempt += 1
        if client.exchange(frame_message(rgb, f"start-{attempt}"), timeout=0.5) is not None:
            return
    raise NodeBenchError(f"road_seg_node did not answer within {START_TIMEOUT_S:.0f} s (log: {node.log_path})")


def measure_size(client: OverheadClient, size, config) -> dict:
    frames = synthetic_frames(size, count=4)
    reps = min(config.reps, MAX_FRAMES)
    rows, lost = [], 0
    for index in range(config.warmup + reps):
        msg = frame_message(frames[index % len(frames)], f"{size[0]}x{size[1]}-{index}")
        reply = client.exchange(msg, REPLY_TIMEOUT_S)
        if reply is None:
            lost += 1
            continue
        if index >= config.warmup:
            sent, arrived, timings = reply
            latency = (arrived - sent) * 1000.0
            engine = sum(timings[stage] for stage in ENGINE_STAGES)
            overhead = latency - engine
            rows.append({"latency": latency, "engine": engine, "overhead": overhead, **node_stage_timings(timings)})
    if not rows:
        raise NodeBenchError(f"no label came back for any {size[0]}x{size[1]} frame")
    return {
        "size": f"{size[0]}x{size[1]}",
        "frames": len(rows),
        "lost": lost,
        **{key: percentile_pair([row[key] for row in rows]) for key in rows[0]},
    }


def node_stage_timings(timings: dict) -> dict:
    """The node's own stages (decode, queue, publish) from a timing message, as node_STAGE keys."""
    return {f"node_{stage}": timings[stage] for stage in NODE_STAGES if stage in timings}


def percentile_pair(values) -> dict:
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}


def node_markdown(rows: list) -> list:
    lines = [
        "",
        "## Node overhead over ROS 2 (localhost, FastDDS, one frame in flight)",
        "",
        "Latency: `publish` of a sensor_msgs/Image rgb8 frame to its label's callback in another process; "
        "engine: the node's reported preprocess + inference + postprocess for that frame; overhead = latency - "
        "engine. The node's own decode, queue (hand-over to its worker) and publish stages are shown too.",
        "",
        "| frame | frames (lost) | latency p50 / p95 ms | engine p50 ms | overhead p50 / p95 ms "
        "| node decode p50 | queue p50 | publish p50 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        node = [f"{row[f'node_{stage}']['p50']:.2f}" if f"node_{stage}" in row else "-" for stage in NODE_STAGES]
        lines.append(
            f"| {row['size']} | {row['frames']} ({row['lost']}) "
            f"| {row['latency']['p50']:.1f} / {row['latency']['p95']:.1f} | {row['engine']['p50']:.1f} "
            f"| {row['overhead']['p50']:.2f} / {row['overhead']['p95']:.2f} | {' | '.join(node)} |"
        )
    return lines
