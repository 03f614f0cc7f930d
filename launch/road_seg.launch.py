"""Starts road_seg_node with config/road_seg.yaml, the large-frame DDS profile and, optionally, RViz.

ros2 launch road_seg_ros road_seg.launch.py image:=/camera/image_raw device:=cuda rviz:=true
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.launch_description import LaunchDescription  # `from launch import` would read as our launch/ folder
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "road_seg_ros"
EXECUTABLE = "road_seg_node"
NODE_NAME = "road_seg"
PARAMS_FILE = "road_seg.yaml"
RVIZ_CONFIG = "road_seg.rviz"
DDS_PROFILE = "fastdds.xml"
# Fast DDS 2.x (these distros) reads only the old variable; Fast DDS 3 warns that it is deprecated.
FASTDDS_2_DISTROS = ("humble", "iron", "jazzy")
# Launch arguments named after node parameters: given a value, they override the params file.
PARAMETER_ARGUMENTS = {
    "input_transport": "raw (sensor_msgs/Image on image) or compressed (image/compressed)",
    "model_path": "checkpoint (.safetensors) to run",
    "device": "auto, cuda or cpu",
}


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument("image", default_value="image", description="camera image topic"),
            DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
            DeclareLaunchArgument("node_name", default_value=NODE_NAME, description="name of the node"),
            DeclareLaunchArgument(
                "params_file", default_value=os.path.join(share, "config", PARAMS_FILE), description="ROS params file"
            ),
            *(
                DeclareLaunchArgument(name, default_value="", description=f"{text}; empty: from params_file")
                for name, text in PARAMETER_ARGUMENTS.items()
            ),
            DeclareLaunchArgument("rviz", default_value="false", description="also start RViz on the outputs"),
            *_dds_profile_variables(os.path.join(share, "config", DDS_PROFILE)),
            OpaqueFunction(function=_start_node),
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", os.path.join(share, "config", RVIZ_CONFIG)],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )


def _dds_profile_variables(profile):
    """Large frames need the profile in every process that sends them; a profile the user set wins."""
    names = ["FASTDDS_DEFAULT_PROFILES_FILE"]
    if os.environ.get("ROS_DISTRO") in FASTDDS_2_DISTROS:
        names.append("FASTRTPS_DEFAULT_PROFILES_FILE")
    return [SetEnvironmentVariable(name, EnvironmentVariable(name, default_value=profile)) for name in names]


def _start_node(context):
    """The node, with only the parameter arguments actually given overriding the params file."""
    overrides = {name: LaunchConfiguration(name).perform(context) for name in PARAMETER_ARGUMENTS}
    topic = LaunchConfiguration("image").perform(context)
    node_name = LaunchConfiguration("node_name").perform(context)
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=node_name,
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), {k: v for k, v in overrides.items() if v}],
            remappings=[("image", topic), ("image/compressed", f"{topic}/compressed")],
            output="screen",
            emulate_tty=True,
        )
    ]
