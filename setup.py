from glob import glob

from setuptools import find_packages, setup

PACKAGE = "road_seg_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models", glob("models/*.safetensors") + ["models/README.md"]),
        (f"share/{PACKAGE}/bags", glob("bags/*.mcap")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="road_seg_ros developers",
    maintainer_email="dev@road-seg-ros.invalid",
    description="Real-time road-scene semantic segmentation for ROS 2: a small CamVid student, a node, its training.",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "road_seg_node = road_seg_ros.ros.node:main",
            "road-seg-train = road_seg_ros.training.train:main",
            "road-seg-eval = road_seg_ros.training.evaluate:main",
            "road-seg-export = road_seg_ros.training.export:main",
            "road-seg-make-bag = road_seg_ros.tools.make_bag:main",
            "road-seg-replay = road_seg_ros.tools.replay:main",
            "road-seg-bench = road_seg_ros.tools.bench:main",
            "road-seg-adapt = road_seg_ros.tools.adapt:main",
            "road-seg-average = road_seg_ros.training.average:main",
        ],
    },
)
