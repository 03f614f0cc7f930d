"""The package's architecture holds: imports flow tools -> training/ros -> core, and core and offline replay
never load rclpy."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "road_seg_ros"
TESTS = Path(__file__).resolve().parent
# What each subpackage may import from the package; models sits below core.
ALLOWED = {
    "models": set(),
    "core": {"models"},
    "ros": {"core", "models"},
    "training": {"core", "models"},
    "tools": {"core", "models", "ros", "training"},
}
ROS_MODULES = ("rclpy", "rcl_interfaces", "sensor_msgs", "diagnostic_msgs", "std_msgs", "launch")


def imported_modules(path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports (relative imports resolved against the package)."""
    module_parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module_parts[: len(module_parts) - node.level]
                names.add(".".join([*base, node.module] if node.module else base))
            else:
                names.add(node.module)
    return names


@pytest.mark.parametrize("subpackage", sorted(ALLOWED))
def test_imports_flow_one_way(subpackage):
    for path in sorted((PACKAGE / subpackage).rglob("*.py")):
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[0] == "road_seg_ros" and len(parts) > 1 and parts[1] != subpackage:
                assert parts[1] in ALLOWED[subpackage], f"{path.name} imports {name}"
            if subpackage in ("core", "training", "models"):
                assert parts[0] not in ROS_MODULES, f"{path.name} imports {name}: no ROS below ros/"


def test_at_most_the_init_module_at_the_package_root():
    assert sorted(path.name for path in PACKAGE.glob("*.py")) == ["__init__.py"]


def test_no_module_over_400_lines():
    for path in PACKAGE.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path


def test_every_subpackage_and_the_scripts_have_a_test_folder():
    subpackages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert subpackages == set(ALLOWED)
    for name in [*subpackages, "scripts"]:
        assert list((TESTS / name).glob("test_*.py")), f"no test/{name}/test_*.py"


def test_offline_replay_never_loads_rclpy(tmp_path, tiny_checkpoint):
    from road_seg_ros.tools.bags import write_camera_bag

    frame = (np.zeros((64, 80, 3), np.uint8), None)
    bag = tmp_path / "drive.mcap"
    write_camera_bag(bag, [frame, frame], encoding="png")
    script = (
        "import sys; from road_seg_ros.tools.replay import main; "
        f"main([{str(bag)!r}, '--offline', '--out', {str(tmp_path / 'out')!r}, '--checkpoint', "
        f"{str(tiny_checkpoint)!r}, '--device', 'cpu']); "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rcl_interfaces')); "
        "print('ROS modules loaded:', loaded)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| offline | 2/2 (0 dropped) |" in done.stdout
    assert "ROS modules loaded: []" in done.stdout
