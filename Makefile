# The two set-up commands: `make demo` and `make test`. Both build .venv on first use.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# launch, ros2 launch/run/param/... as wheels (../shared/ros2-tools/INSTALL.md): by file path, without deps.
ROS2_TOOLS ?= ../shared/ros2-tools
ROS2_WHEELS := launch-3.7.1 launch_xml-3.7.1 launch_yaml-3.7.1 launch_ros-0.28.0 ros2launch-0.28.0 \
	ros2cli-0.36.1 ros2pkg-0.36.1 ros2run-0.36.1 ros2param-0.36.1 ros2node-0.36.1 ros2topic-0.36.1 \
	ros2service-0.36.1 rosidl_runtime_py-0.14.0 composition_interfaces_stub-0.0.1
TOOLS_STAMP := $(VENV)/.ros2-tools

.PHONY: demo test lint venv ros2-tools clean

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
	$(PYTHON) -c "import launch_ros.actions, ros2launch, ros2run, ros2param"
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint ros2-tools
	$(PYTHON) -m pytest

demo: $(STAMP)
	$(VENV)/bin/road-seg-replay --out out

clean:
	rm -rf $(VENV) out build install log
