"""Starts road_seg_node with config/road_seg.yaml and, optionally, RViz on its outputs.

ros2 launch road_seg_ros road_seg.launch.py image:=/camera/image_raw device:=cuda rviz:=true
ros2 launch road_seg_ros road_seg.launch.py cameras:="[front, left]"   # front/image, left/image in
ros2 launch road_seg_ros road_seg.launch.py use_sim_time:=true   # beside `ros2 bag play --clock`
ros2 launch road_seg_ros road_seg.launch.py autostart:=false     # for a lifecycle manager

The node applies the large-frame DDS profile (config/fastdds.xml) itself, unless one is set.
"""

import os

from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_description import LaunchDescription  # `from launch import` would read as our launch/ folder
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "road_seg_ros"
EXECUTABLE = "road_seg_node"
NODE_NAME = "road_seg"
PARAMS_FILE = "road_seg.yaml"
RESPAWN_DELAY_S = 1.0
RVIZ_CONFIG = "road_seg.rviz"
RVIZ_PACKAGE = "rviz2"
# Launch arguments named after node parameters: given a value, they override the params file.
PARAMETER_ARGUMENTS = {
    "input_transport": "raw (sensor_msgs/Image on image) or compressed (image/compressed)",
    "model_path": "checkpoint (.safetensors) to run",
    "device": "auto, cuda, cuda:N (the GPU N) or cpu",
}


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument("image", default_value="image", description="camera image topic"),
            DeclareLaunchArgument(
                "cameras",
                default_value="",
                description='camera names, e.g. "[front, left]": camera C reads C/image, publishes ~/C/label ...; '
                "empty: from params_file",
            ),
            DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
            DeclareLaunchArgument("node_name", default_value=NODE_NAME, description="name of the node"),
            DeclareLaunchArgument(
                "params_file", default_value=os.path.join(share, "config", PARAMS_FILE), description="ROS params file"
            ),
            *(
                DeclareLaunchArgument(name, default_value="", description=f"{text}; empty: from params_file")
                for name, text in PARAMETER_ARGUMENTS.items()
            ),
            DeclareLaunchArgument(
                "autostart",
                default_value="true",
                description="configure and activate the node at start-up; false: it waits, unconfigured, for a "
                "lifecycle manager",
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="false",
                description="take time from /clock (a bag played with --clock): frame ages on the bag's clock",
            ),
            DeclareLaunchArgument(
                "log_level", default_value="info", description="the node's log level: debug, info, warn, error, fatal"
            ),
            DeclareLaunchArgument(
                "respawn",
                default_value="false",
                description=f"start the node again {RESPAWN_DELAY_S:g} s after it exits",
            ),
            DeclareLaunchArgument("rviz", default_value="false", description="also start RViz on the outputs"),
            OpaqueFunction(function=_start_node),
            OpaqueFunction(function=_start_rviz, kwargs={"config": os.path.join(share, "config", RVIZ_CONFIG)}),
        ]
    )


def _start_node(context):
    """The node, with only the parameter arguments actually given overriding the params file."""
    overrides = {name: LaunchConfiguration(name).perform(context) for name in PARAMETER_ARGUMENTS}
    if LaunchConfiguration("cameras").perform(context):  # a YAML list, read as one: "[front, left]"
        overrides["cameras"] = ParameterValue(LaunchConfiguration("cameras"), value_type=list[str])
    for flag in ("autostart", "use_sim_time"):
        overrides[flag] = IfCondition(LaunchConfiguration(flag)).evaluate(context)
    topic = LaunchConfiguration("image").perform(context)
    node_name = LaunchConfiguration("node_name").perform(context)
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=node_name,
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), {k: v for k, v in overrides.items() if v != ""}],
            remappings=[("image", topic), ("image/compressed", f"{topic}/compressed")],
            arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
            respawn=IfCondition(LaunchConfiguration("respawn")).evaluate(context),
            respawn_delay=RESPAWN_DELAY_S,
            output="screen",
            emulate_tty=True,
        )
    ]


def _start_rviz(context, config):
    """RViz when asked for and installed. A missing rviz2 is one line, not an error: an error would stop
    launch, and the node it already started would be left running on its own."""
    if not IfCondition(LaunchConfiguration("rviz")).evaluate(context):
        return []
    try:
        get_package_prefix(RVIZ_PACKAGE)
    except PackageNotFoundError:
        return [LogInfo(msg=f"rviz:=true, but {RVIZ_PACKAGE} is not installed: starting without RViz")]
    return [Node(package=RVIZ_PACKAGE, executable=RVIZ_PACKAGE, arguments=["-d", config])]
