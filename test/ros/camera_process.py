"""A camera driver in a process of its own, as a user's would be: its own QoS and no road_seg DDS profile.

    python camera_process.py TOPIC reliable|best_effort

prints ``ready`` once the node's input is matched (for a reliable camera: once every subscription on
the topic is reliable and matched, steadily), then, for each ``WIDTH HEIGHT SEED FRAME_ID`` line on
stdin, publishes that bgr8 frame once and prints ``sent FRAME_ID``. Exits at the end of stdin. Start it
with ``camera_environment()``: without our DDS profile, unless asked for (as the README advises for a
best-effort camera).
"""

import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
PROFILE = Path(__file__).resolve().parents[2] / "config" / "fastdds.xml"
READY_TIMEOUT_S = 60.0
STEADY_S = 0.5


def road_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB frame: regions large enough for the model to label differently."""
    coarse = np.random.default_rng(seed).integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3), np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)


def camera_environment(with_profile: bool = False) -> dict:
    """This process's environment (its ROS_DOMAIN_ID included) with no Fast DDS profile, or with ours."""
    environment = {name: value for name, value in os.environ.items() if name not in PROFILE_VARIABLES}
    if with_profile:
        environment["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    return environment


def _wait_until_matched(node, publisher, reliable: bool) -> None:
    """Returns once a subscription is matched; for a reliable camera, once every subscription the graph shows
    is reliable and matched, and has stayed so for ``STEADY_S``. A node that re-creates its subscription shows
    the new one in the graph before this publisher may have matched it, while the old one may still count as
    matched: a frame sent then reaches only the old reader, and is lost."""
    from rclpy.qos import ReliabilityPolicy

    deadline = time.monotonic() + READY_TIMEOUT_S
    steady_since = None
    while time.monotonic() < deadline:
        subscriptions = node.get_subscriptions_info_by_topic(publisher.topic_name)
        reliabilities = {info.qos_profile.reliability for info in subscriptions}
        matched = publisher.get_subscription_count()
        if not reliable:
            if matched:
                return
        elif matched == len(subscriptions) > 0 and reliabilities == {ReliabilityPolicy.RELIABLE}:
            steady_since = steady_since or time.monotonic()
            if time.monotonic() - steady_since >= STEADY_S:
                return
        else:
            steady_since = None
        time.sleep(0.05)
    raise SystemExit(f"camera: no matching subscription on {publisher.topic_name} within {READY_TIMEOUT_S:g} s")


def main(topic: str, reliability: str) -> None:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from road_seg_ros.ros.image_conversion import rgb_to_image

    reliable = reliability == "reliable"
    # image_transport's default (reliable, depth 10) or the sensor-data profile (best effort, depth 5)
    profile = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data
    rclpy.init()
    node = rclpy.create_node(f"camera_{os.getpid()}")
    publisher = node.create_publisher(Image, topic, profile)
    _wait_until_matched(node, publisher, reliable)
    print("ready", flush=True)
    for line in sys.stdin:
        width, height, seed, frame_id = line.split()
        header = Header(frame_id=frame_id)
        header.stamp = node.get_clock().now().to_msg()
        publisher.publish(rgb_to_image(road_frame(int(height), int(width), int(seed)), header, encoding="bgr8"))
        print(f"sent {frame_id}", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
