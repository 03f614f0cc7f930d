"""`make demo`: the live node on a short clip of real CamVid road frames, over ROS 2.

Starts road_seg_node with the shipped checkpoint as a process of its own,
publishes CamVid test frames to it one at a time (each after the previous one
came back, so none is dropped), receives every output, prints a summary and
writes a few colorized and overlay PNGs under out/demo/.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from .camvid_classes import CLASS_NAMES
from .data import DataError, load_rgb, read_split
from .image_conversion import image_to_array, rgb_to_image
from .node import NODE_NAME, PARAMS_FILE_NAME, apply_dds_profile, config_file

NAMESPACE = "/road_seg_demo"  # keeps the demo's topics apart from a node already running
OUTPUTS = ("label", "color", "overlay", "timing")
STARTUP_TIMEOUT_S = 120.0  # first frame: the node imports torch and loads the model
FRAME_TIMEOUT_S = 30.0
RESEND_AFTER_S = 2.0  # best effort: a frame lost on the way is sent again


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30, help="how many frames of the clip to send")
    parser.add_argument("--drive", default="0001TP", help="CamVid test drive (0001TP or Seq05VD)")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--model", default="", help="checkpoint; default: the shipped student")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for the PNGs")
    parser.add_argument("--data", default=None, help="CamVid folder (default: $CAMVID_ROOT or ../shared/camvid)")
    return parser.parse_args(argv)


def load_clip(args) -> list[tuple[str, np.ndarray]]:
    samples = [s for s in read_split(args.data, "test") if s.name.startswith(args.drive)][: args.frames]
    if not samples:
        raise DataError(f"no CamVid test frames of drive {args.drive!r}")
    return [(sample.name, load_rgb(sample.image)) for sample in samples]


def start_node(args) -> subprocess.Popen:
    command = [sys.executable, "-m", "road_seg_ros.node", "--ros-args", "-r", f"__ns:={NAMESPACE}"]
    command += ["--params-file", str(config_file(PARAMS_FILE_NAME)), "-p", f"device:={args.device}"]
    if args.model:
        command += ["-p", f"model_path:={args.model}"]
    return subprocess.Popen(command)


class Client:
    """Publishes frames to the node and collects its outputs by frame_id."""

    def __init__(self):
        self.node = rclpy.create_node("road_seg_demo_client")
        self.received = {}  # frame_id -> {output: msg}
        self.publisher = self.node.create_publisher(Image, f"{NAMESPACE}/image", qos_profile_sensor_data)
        for output in OUTPUTS:
            msg_type = DiagnosticArray if output == "timing" else Image
            topic = f"{NAMESPACE}/{NODE_NAME}/{output}"
            self.node.create_subscription(msg_type, topic, self._collector(output), qos_profile_sensor_data)

    def _collector(self, output):
        def collect(msg):
            self.received.setdefault(msg.header.frame_id, {})[output] = msg

        return collect

    def exchange(self, msg, timeout: float, node_process: subprocess.Popen) -> dict | None:
        """Sends ``msg`` until all its outputs came back; None after ``timeout`` or if the node exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and node_process.poll() is None:
            self.publisher.publish(msg)
            resend = time.monotonic() + RESEND_AFTER_S
            while time.monotonic() < min(resend, deadline):
                rclpy.spin_once(self.node, timeout_sec=0.02)
                if len(self.received.get(msg.header.frame_id, {})) == len(OUTPUTS):
                    return self.received.pop(msg.header.frame_id)
        return None


def timing_values(msg: DiagnosticArray) -> dict:
    return {value.key: float(value.value) for value in msg.status[0].values if value.key.endswith("_ms")}


def run(args, clip, node_process) -> dict:
    client = Client()
    round_trips, timings, pixel_counts, written, device = [], [], np.zeros(256, np.int64), [], "?"
    keep = {0, len(clip) // 2, len(clip) - 1}  # frames whose PNGs are written
    args.out.mkdir(parents=True, exist_ok=True)
    started = None
    for index, (name, rgb) in enumerate(clip):
        header = Header(frame_id=name, stamp=client.node.get_clock().now().to_msg())
        sent = time.perf_counter()
        timeout = STARTUP_TIMEOUT_S if index == 0 else FRAME_TIMEOUT_S
        outputs = client.exchange(rgb_to_image(rgb, header), timeout, node_process)
        if outputs is None:
            break
        round_trips.append((time.perf_counter() - sent) * 1000.0)
        started = started or time.perf_counter()  # throughput counts from the first answer: start-up excluded
        timings.append(timing_values(outputs["timing"]))
        device = outputs["timing"].status[0].hardware_id
        pixel_counts += np.bincount(image_to_array(outputs["label"]).ravel(), minlength=256)
        if index in keep:
            for output in ("color", "overlay"):
                path = args.out / f"{name}_{output}.png"
                cv2.imwrite(str(path), cv2.cvtColor(image_to_array(outputs[output]), cv2.COLOR_RGB2BGR))
                written.append(path)
    client.node.destroy_node()
    seconds = time.perf_counter() - started if started else 0.0
    return {
        "frames_out": len(round_trips),
        "fps": (len(round_trips) - 1) / seconds if seconds > 0 else float("nan"),
        "round_trips": round_trips[1:],  # the first waited for the node to start
        "timings": timings,
        "pixel_counts": pixel_counts,
        "written": written,
        "device": device,
    }


def percentiles(values) -> str:
    if not len(values):
        return "n/a"
    p50, p90, p95, top = np.percentile(values, [50, 90, 95, 100])
    return f"{p50:8.1f} {p90:8.1f} {p95:8.1f} {top:8.1f}"


def print_summary(args, clip, result, node_exit) -> None:
    height, width = clip[0][1].shape[:2]
    print(
        f"\nroad_seg demo: CamVid test drive {args.drive}, {len(clip)} frames of {width}x{height}, {result['device']}"
    )
    print(f"frames in/out: {len(clip)}/{result['frames_out']} (label, color, overlay and timing for each)")
    print(f"throughput: {result['fps']:.2f} FPS (each frame sent once the previous one came back)")
    print(f"{'latency ms':24}{'p50':>8} {'p90':>8} {'p95':>8} {'max':>8}")
    print(f"{'  round trip':24}{percentiles(result['round_trips'])}")
    for stage in ("total", "decode", "preprocess", "inference", "postprocess", "render", "publish"):
        print(f"{'  node ' + stage:24}{percentiles([t[f'{stage}_ms'] for t in result['timings']])}")
    engine_stages = ("preprocess_ms", "inference_ms", "postprocess_ms")
    overhead = [t["total_ms"] - sum(t[stage] for stage in engine_stages) for t in result["timings"]]
    print(f"{'  node minus engine':24}{percentiles(overhead)}")
    counts = result["pixel_counts"][: len(CLASS_NAMES)]
    shares = 100.0 * counts / max(counts.sum(), 1)
    print("class distribution (% of pixels): " + ", ".join(f"{n} {s:.1f}" for n, s in zip(CLASS_NAMES, shares)))
    print(f"wrote {len(result['written'])} PNGs under {args.out}/ (colorized and overlay)")
    print(f"node exit status: {node_exit}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        clip = load_clip(args)
    except DataError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    apply_dds_profile()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    node = start_node(args)
    rclpy.init()
    try:
        result = run(args, clip, node)
    finally:
        node.send_signal(signal.SIGINT)
        node_exit = node.wait(timeout=60)
        rclpy.try_shutdown()
    print_summary(args, clip, result, node_exit)
    if result["frames_out"] < len(clip) or node_exit != 0:
        print(f"demo: {len(clip) - result['frames_out']} frames unanswered, node exit {node_exit}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
