"""rclpy plumbing shared by the node and its clients: the Fast DDS profile, the executor, a private domain."""

import io
import os

from rclpy.executors import Executor, SingleThreadedExecutor

from ..core.resources import find_shipped

DDS_PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
DDS_PROFILE_NAME = "fastdds.xml"
# Distros whose Fast DDS 2.x reads only the old variable; Fast DDS 3 warns that it is deprecated.
FASTDDS_2_DISTROS = ("humble", "iron", "jazzy")


def apply_dds_profile(environ=os.environ) -> None:
    """Points FastDDS at the large-frame profile unless the user chose a profile; call before rclpy.init."""
    if any(environ.get(name) for name in DDS_PROFILE_VARIABLES):
        return
    profile = find_shipped("config", DDS_PROFILE_NAME)
    if profile:
        environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
        if environ.get("ROS_DISTRO") in FASTDDS_2_DISTROS:
            environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(profile)


def private_domain(environ=os.environ) -> None:
    """A private, localhost-only DDS domain unless the caller chose one; call before rclpy.init."""
    # 1..101: ids above 101 can collide with Linux ephemeral ports; 0 is left to the default graph
    environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 101))
    environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    apply_dds_profile(environ)


def fast_executor(context=None) -> Executor:
    """rclpy's C++ events executor where the distro has it (Kilted on), else the single-threaded one.

    The Python executor rebuilds its wait set in Python, holding the GIL, after every callback; the
    worker thread waits for it before it can start on a frame. Measured here (benchmarks/cpu.md):
    the hand-over falls from about 0.6 ms to 0.15 ms at 360x480.
    """
    try:
        from rclpy.experimental import EventsExecutor

        return EventsExecutor(context=context)
    # UnsupportedOperation: it enables faulthandler, which needs a real stderr (not so under capsys)
    except (ImportError, io.UnsupportedOperation):
        return SingleThreadedExecutor(context=context)
