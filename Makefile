# The two set-up commands: `make demo` and `make test`. Both build .venv on first use.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# launch, ros2 launch/run/param/... as wheels (../shared/ros2-tools/INSTALL.md): by file path, without deps.
ROS2_TOOLS ?= ../shared/ros2-tools
ROS2_WHEELS := launch-3.7.1 launch_xml-3.7.1 launch_yaml-3.7.1 launch_ros-0.28.0 ros2launch-0.28.0 \
	ros2cli-0.36.1 ros2pkg-0.36.1 ros2run-0.36.1 ros2param-0.36.1 ros2node-0.36.1 ros2topic-0.36.1 \
	ros2service-0.36.1 ros2lifecycle-0.36.1 rosidl_runtime_py-0.14.0 composition_interfaces_stub-0.0.1
TOOLS_STAMP := $(VENV)/.ros2-tools

.PHONY: demo test test-jazzy lint venv ros2-tools clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-train.txt setup.py
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# A sourced ROS 2 distro brings its own tools; else the wheels, when ../shared/ros2-tools is there. Without
# either, the tests that need `ros2 launch` / `ros2 run` skip and say so.
# COLCON_IGNORE: colcon must never take the venv's share/*/package.xml (from the ros-* wheels) for packages.
ros2-tools: $(STAMP)
	@touch $(VENV)/COLCON_IGNORE
	@if [ -n "$$ROS_DISTRO" ] && command -v ros2 >/dev/null && [ "$$(command -v ros2)" != "$(abspath $(VENV))/bin/ros2" ]; then \
		echo "ros2-tools: using ROS 2 $$ROS_DISTRO's own ros2 and launch"; \
	elif [ -d "$(ROS2_TOOLS)" ]; then \
		$(MAKE) --no-print-directory $(TOOLS_STAMP); \
	else \
		echo "ros2-tools: no $(ROS2_TOOLS) and no ROS 2 distro sourced: ros2 launch/run tests will skip"; \
	fi

# --no-deps: launch_ros asks for `ament_index_python`, which PyPI names ros-ament-index-python (installed).
# The import check fails here, not in a test, if a wheel or a dependency is off.
$(TOOLS_STAMP): $(STAMP)
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps $(ROS2_WHEELS:%=$(ROS2_TOOLS)/%-py3-none-any.whl)
	$(PYTHON) -c "import launch_ros.actions, ros2launch, ros2run, ros2param, ros2lifecycle"
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint ros2-tools
	$(PYTHON) -m pytest

# ROS 2 Jazzy (the LTS): test/ros again in a second venv, from requirements-jazzy.txt (Jazzy's ROS wheels), with the
# test tools at requirements-dev.txt's pins and the same ros2 tool wheels as .venv (skipped without them).
JAZZY_VENV ?= .venv-jazzy
JAZZY_STAMP := $(JAZZY_VENV)/.installed
JAZZY_TOOLS_STAMP := $(JAZZY_VENV)/.ros2-tools
JAZZY_TEST_PINS = $(shell grep -E '^(pytest|pytest-xdist|pytest-timeout|colcon-common-extensions|osrf-pycommon|psutil)==' requirements-dev.txt)

$(JAZZY_STAMP): requirements-jazzy.txt requirements-dev.txt setup.py
	python3 -m venv $(JAZZY_VENV)
	$(JAZZY_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-jazzy.txt $(JAZZY_TEST_PINS)
	$(JAZZY_VENV)/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(JAZZY_VENV)/COLCON_IGNORE
	touch $@

$(JAZZY_TOOLS_STAMP): $(JAZZY_STAMP)
	@if [ -d "$(ROS2_TOOLS)" ]; then \
		$(JAZZY_VENV)/bin/pip install -q --disable-pip-version-check --no-deps $(ROS2_WHEELS:%=$(ROS2_TOOLS)/%-py3-none-any.whl) && \
		$(JAZZY_VENV)/bin/python -c "import launch_ros.actions, ros2launch, ros2run, ros2param"; \
	else \
		echo "test-jazzy: no $(ROS2_TOOLS): ros2 launch/run tests will skip"; \
	fi
	touch $@

test-jazzy: $(JAZZY_TOOLS_STAMP)
	$(JAZZY_VENV)/bin/python -c "import rclpy, importlib.metadata as m; print('ROS 2 Jazzy: ros-rclpy', m.version('ros-rclpy'))"
	$(JAZZY_VENV)/bin/python -m pytest test/ros

demo: $(STAMP)
	$(VENV)/bin/road-seg-replay --out out

clean:
	rm -rf $(VENV) $(JAZZY_VENV) out build install log
