"""The RViz config the launch file opens (`rviz:=true`): the one part of it that test_ros2_tools.py, which
runs the launch file for real, cannot start on a machine without rviz2."""

import ast
from pathlib import Path

import yaml

from road_seg_ros.ros.params import NODE_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO_ROOT / "launch" / "road_seg.launch.py"


def launch_constant(name: str):
    for statement in ast.parse(LAUNCH_FILE.read_text()).body:
        if isinstance(statement, ast.Assign) and getattr(statement.targets[0], "id", None) == name:
            return ast.literal_eval(statement.value)
    raise AssertionError(f"{LAUNCH_FILE.name} has no {name}")


def test_rviz_config_shows_the_input_and_the_node_outputs():
    rviz = yaml.safe_load((REPO_ROOT / "config" / launch_constant("RVIZ_CONFIG")).read_text())
    displays = rviz["Visualization Manager"]["Displays"]
    topics = {display["Topic"]["Value"] for display in displays}
    assert topics == {"/image", f"/{NODE_NAME}/color", f"/{NODE_NAME}/overlay"}
    # best effort connects to every publisher, a best-effort camera's included
    assert {display["Topic"]["Reliability Policy"] for display in displays} == {"Best Effort"}
