"""How many camera frames cross from one process to another, by QoS and by the camera's DDS profile.

    .venv/bin/python scripts/dds_delivery.py > benchmarks/dds_delivery.md

A camera process publishes FRAMES bgr8 frames at 5 Hz once matched; this process subscribes the way
road_seg_node does (with config/fastdds.xml) and counts what arrives. Fast DDS on localhost, no node:
only the transport is measured. The README's QoS and DDS-profile paragraphs quote the table.

    .venv/bin/python scripts/dds_delivery.py cameras HZ SECONDS DEPTH PROFILE WxH [WxH ...]

Several reliable cameras in one process (no DDS profile, image_transport's QoS), each tick publishing every
camera's frame back to back (a multi-camera driver, `ros2 bag play`); this process subscribes reliable at
input depth DEPTH with PROFILE (a profile file, or `none`) and prints one line: frames received per camera.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

FRAMES = 10
SIZES = ((640, 480), (1280, 720), (1920, 1080))
CASES = (  # camera reliability, subscriber reliability, camera has the profile
    ("best_effort", "best_effort", False),
    ("reliable", "best_effort", False),
    ("reliable", "reliable", False),
    ("best_effort", "best_effort", True),
)
PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds.xml"


def qos(reliability: str):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(depth=10 if reliability == "reliable" else 5, reliability=policy)  # image_transport / sensor


def camera(width: int, height: int, reliability: str) -> None:
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    publisher = rclpy.create_node("camera").create_publisher(Image, "image", qos(reliability))
    while not publisher.get_subscription_count():
        time.sleep(0.05)
    time.sleep(0.5)
    data = np.random.default_rng(0).integers(0, 256, height * width * 3, np.uint8).tobytes()
    for index in range(FRAMES):
        msg = Image(height=height, width=width, encoding="bgr8", step=width * 3, data=data)
        msg.header.frame_id = str(index)
        publisher.publish(msg)
        time.sleep(0.2)
    time.sleep(1.0)  # reliable: time for the last retransmissions


def main() -> None:
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 101))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("counter")
    print(f"Frames received of {FRAMES} (`{' '.join(sys.argv)}`, Fast DDS, localhost)\n")
    print("| camera QoS | subscriber QoS | camera's DDS profile | " + " | ".join(f"{w}x{h}" for w, h in SIZES) + " |")
    print("|---|---|---|" + "---|" * len(SIZES))
    for camera_reliability, subscriber_reliability, with_profile in CASES:
        counts = []
        for width, height in SIZES:
            received = set()
            subscription = node.create_subscription(
                Image, "image", lambda msg, seen=received: seen.add(msg.header.frame_id), qos(subscriber_reliability)
            )
            env = dict(os.environ)
            if not with_profile:
                env.pop("FASTDDS_DEFAULT_PROFILES_FILE")
            child = subprocess.Popen([sys.executable, __file__, str(width), str(height), camera_reliability], env=env)
            while child.poll() is None:
                rclpy.spin_once(node, timeout_sec=0.05)
            node.destroy_subscription(subscription)
            counts.append(len(received))
        profile = "config/fastdds.xml" if with_profile else "none (defaults)"
        row = f"| {camera_reliability} | {subscriber_reliability} | {profile} | "
        print(row + " | ".join(str(count) for count in counts) + " |", flush=True)


def cameras_sender(hz: float, seconds: float, sizes: list) -> None:
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("cameras")
    publishers = [node.create_publisher(Image, f"cam{index}/image", qos("reliable")) for index in range(len(sizes))]
    while not all(publisher.get_subscription_count() for publisher in publishers):
        time.sleep(0.05)
    time.sleep(1.0)
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 256, h * w * 3, np.uint8).tobytes() for w, h in sizes]
    start = time.monotonic()
    for index in range(round(hz * seconds)):
        time.sleep(max(start + index / hz - time.monotonic(), 0.0))
        for publisher, (width, height), pixels in zip(publishers, sizes, data):
            msg = Image(height=height, width=width, encoding="bgr8", step=width * 3, data=pixels)
            msg.header.frame_id = str(index)
            msg.header.stamp = node.get_clock().now().to_msg()
            publisher.publish(msg)
    time.sleep(3.0)  # time for the last retransmissions


def cameras_receiver(hz: str, seconds: str, depth: str, profile: str, sizes: list) -> None:
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 101))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env = {name: value for name, value in os.environ.items() if "PROFILES_FILE" not in name}
    os.environ.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    if profile == "none":
        os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    else:
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("counter")
    received = [set() for _ in sizes]
    reliable = QoSProfile(depth=int(depth), reliability=ReliabilityPolicy.RELIABLE)
    for index, seen in enumerate(received):
        node.create_subscription(
            Image, f"cam{index}/image", lambda msg, seen=seen: seen.add(msg.header.frame_id), reliable
        )
    child = subprocess.Popen([sys.executable, __file__, "send", hz, seconds, *sizes], env=env)
    while child.poll() is None:
        rclpy.spin_once(node, timeout_sec=0.05)
    sent = round(float(hz) * float(seconds))
    print(" | ".join(f"{size} {len(seen)}/{sent}" for size, seen in zip(sizes, received)), flush=True)


def _sizes(arguments: list) -> list:
    return [tuple(int(side) for side in argument.split("x")) for argument in arguments]


if __name__ == "__main__":
    if len(sys.argv) == 4:
        camera(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1:2] == ["send"]:
        cameras_sender(float(sys.argv[2]), float(sys.argv[3]), _sizes(sys.argv[4:]))
    elif sys.argv[1:2] == ["cameras"]:
        cameras_receiver(*sys.argv[2:6], sys.argv[6:])
    else:
        main()
