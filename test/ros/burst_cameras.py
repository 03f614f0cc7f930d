"""Several cameras in one process of their own, as a multi-camera driver or `ros2 bag play` would be: no road_seg
DDS profile, each tick publishing every camera's frame back to back.

    python burst_cameras.py HZ FRAMES reliable|best_effort[:SKIP] TOPIC=WxH [TOPIC=WxH ...]

prints ``ready`` once every camera's subscription is matched, publishes FRAMES ticks at HZ with frame ids
``<tick>`` and stamps on the tick's schedule, prints ``done`` and exits. With SKIP, every SKIP-th tick (ticks
SKIP - 1, 2 * SKIP - 1, ...) is not sent: frames lost before they reach DDS, a known number. Start it with
``camera_environment()``.
"""

import os
import sys
import time

from camera_process import _wait_until_matched, road_frame


def main(hz: str, frames: str, reliability: str, *cameras: str) -> None:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from road_seg_ros.ros.image_conversion import rgb_to_image

    reliability, _, skip = reliability.partition(":")
    skip = int(skip or 0)
    reliable = reliability == "reliable"
    profile = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data
    rclpy.init()
    node = rclpy.create_node(f"cameras_{os.getpid()}")
    streams = []
    for index, camera in enumerate(cameras):
        topic, size = camera.split("=")
        width, height = (int(side) for side in size.split("x"))
        streams.append((node.create_publisher(Image, topic, profile), road_frame(height, width, seed=index)))
    for publisher, _ in streams:
        _wait_until_matched(node, publisher, reliable)
    print("ready", flush=True)
    period_ns = round(1e9 / float(hz))
    start = time.monotonic()
    start_ns = node.get_clock().now().nanoseconds
    for tick in range(int(frames)):
        time.sleep(max(start + tick * period_ns / 1e9 - time.monotonic(), 0.0))
        header = Header(frame_id=str(tick))
        header.stamp.sec, header.stamp.nanosec = divmod(start_ns + tick * period_ns, 10**9)
        if skip and tick % skip == skip - 1:
            continue
        for publisher, rgb in streams:
            publisher.publish(rgb_to_image(rgb, header, encoding="bgr8"))
    time.sleep(2.0)  # reliable: time for the last retransmissions
    print("done", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
