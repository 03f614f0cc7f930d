"""The launch file, checked as far as a machine without `launch` allows: it compiles, and everything it
names (package, executable, parameters, config files, node name) exists where setup.py and config/ say."""

import ast
import fnmatch
import importlib
from pathlib import Path

import pytest
import yaml

from road_seg_ros.ros import params as node

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO_ROOT / "launch" / "road_seg.launch.py"
REQUIRED_ARGUMENTS = {"image", "input_transport", "params_file", "model_path", "device", "namespace", "node_name"}


def module_constants(path: Path) -> dict:
    """The module-level NAME = literal assignments of a Python file."""
    constants = {}
    for statement in ast.parse(path.read_text()).body:
        if isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name):
            try:
                constants[statement.targets[0].id] = ast.literal_eval(statement.value)
            except ValueError:
                continue  # not a literal
    return constants


def calls(tree, function_name: str) -> list[ast.Call]:
    return [
        call
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", None)) == function_name
    ]


def literal_arguments(tree, function_name: str) -> set:
    return {
        call.args[0].value
        for call in calls(tree, function_name)
        if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)
    }


@pytest.fixture(scope="module")
def launch_tree():
    source = LAUNCH_FILE.read_text()
    compile(source, str(LAUNCH_FILE), "exec")
    return ast.parse(source)


@pytest.fixture(scope="module")
def launch_constants():
    return module_constants(LAUNCH_FILE)


@pytest.fixture(scope="module")
def setup_py():
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    entry_points = next(
        ast.literal_eval(k.value) for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg == "entry_points"
    )
    scripts = dict(line.replace(" ", "").split("=") for line in entry_points["console_scripts"])
    globs = literal_arguments(tree, "glob")
    return {"package": module_constants(REPO_ROOT / "setup.py")["PACKAGE"], "scripts": scripts, "globs": globs}


def installed(relative_path: str, globs) -> bool:
    return any(fnmatch.fnmatch(relative_path, pattern) for pattern in globs)


def test_launch_file_compiles_and_is_installed(launch_tree, setup_py):
    functions = {statement.name for statement in launch_tree.body if isinstance(statement, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    assert installed(f"launch/{LAUNCH_FILE.name}", setup_py["globs"])


def test_executable_is_a_console_script_of_the_package(launch_constants, setup_py):
    assert launch_constants["PACKAGE"] == setup_py["package"]
    target = setup_py["scripts"][launch_constants["EXECUTABLE"]]
    module_name, function = target.split(":")
    assert callable(getattr(importlib.import_module(module_name), function))


def test_config_files_it_names_exist_and_are_installed(launch_constants, setup_py):
    for key in ("PARAMS_FILE", "RVIZ_CONFIG", "DDS_PROFILE"):
        relative = f"config/{launch_constants[key]}"
        assert (REPO_ROOT / relative).is_file(), relative
        assert installed(relative, setup_py["globs"]), relative


def test_every_parameter_it_sets_is_declared_by_the_node_and_in_the_params_file(launch_tree, launch_constants):
    params_file = yaml.safe_load((REPO_ROOT / "config" / launch_constants["PARAMS_FILE"]).read_text())
    assert launch_constants["NODE_NAME"] == node.NODE_NAME
    assert set(params_file) == {"/**"}  # whatever node_name and namespace the launch gives the node
    parameters = launch_constants["PARAMETER_ARGUMENTS"]
    assert set(parameters) <= set(params_file["/**"]["ros__parameters"])
    assert set(parameters) <= set(node.PARAMETERS_BY_NAME)


def test_arguments_the_issue_asks_for_are_declared_and_every_use_is_declared(launch_tree, launch_constants):
    declared = literal_arguments(launch_tree, "DeclareLaunchArgument") | set(launch_constants["PARAMETER_ARGUMENTS"])
    assert REQUIRED_ARGUMENTS <= declared
    assert literal_arguments(launch_tree, "LaunchConfiguration") <= declared


def test_rviz_config_shows_the_input_and_the_node_outputs(launch_constants):
    rviz = yaml.safe_load((REPO_ROOT / "config" / launch_constants["RVIZ_CONFIG"]).read_text())
    topics = {display["Topic"]["Value"] for display in rviz["Visualization Manager"]["Displays"]}
    assert topics == {"/image", f"/{node.NODE_NAME}/color", f"/{node.NODE_NAME}/overlay"}
