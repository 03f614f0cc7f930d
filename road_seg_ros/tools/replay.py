"""``road-seg-replay``: a camera bag through the live node (or the engine offline), scored and reported.

    road-seg-replay bags/camvid_seq05vd.mcap --out out/

Live mode starts ``road_seg_node`` with the params file (``--connect`` uses a
node already running instead), publishes the bag's image messages exactly as
recorded, original stamps included, over real ROS 2 topics, and matches the
node's labels to the frames and their ground truth by stamp. By default
(``--as-fast-as-possible``) each frame is sent once the previous frame's label
is back, so the run measures the node and nothing is lost on this side;
``--rate R`` plays at R times the recorded speed and counts what the node
drops. ``--offline`` runs the engine over the bag directly, with no ROS graph
(rclpy is not even imported).

DIR gets report.md, report.json, a latency histogram, per-class IoU bars and
an overlay mosaic; ``--record`` also writes the input and the node's outputs
to a bag for RViz or Foxglove.
"""

import argparse
import itertools
import math
import signal
import time
from pathlib import Path

from tqdm import tqdm

from ..core.checkpoint import CheckpointError, ModelInfo, read_info
from ..core.cli import add_engine_arguments, exit_with, given_engine_flags, positive_number
from ..core.engine import SegmentationEngine
from ..core.options import NODE_PARAMETERS, EngineError, EngineOptions
from ..core.resources import NODE_NAME, PARAMS_FILE_NAME, ParamsFileError, find_shipped, read_node_parameters
from .bags import BagError, CameraBag, bundled_bag
from .replay_report import ReplayError, ReplayTally, format_summary, write_report

FRAME_TIMEOUT_S = 10.0  # a frame whose label is not back by then counts as dropped
DEFAULT_OUT = "out"


def run_replay(
    bag,
    out_dir=DEFAULT_OUT,
    topic=None,
    gt_topic=None,
    rate=None,
    offline=False,
    record=None,
    params_file=None,
    parameters=None,
    connect=False,
    frame_timeout_s=FRAME_TIMEOUT_S,
    progress=None,
    on_output=None,
) -> dict:
    """Replays ``bag`` and writes the report to ``out_dir``; returns the report (report.json's content).

    ``rate`` None means as fast as possible (lockstep with the node); otherwise
    a multiple of the recorded speed. ``parameters`` (model_path, device, ...)
    override the params file's, for the node and the offline engine alike.
    ``on_output(stamp_ns, labels)`` sees every output, for callers that
    compare runs. ``progress`` None shows a bar on terminals only.
    """
    if rate is not None and not 0 < rate < math.inf:
        raise ReplayError(f"rate must be a positive number, got {rate}")
    params_file = params_file or find_shipped("config", PARAMS_FILE_NAME)
    if params_file is None:
        raise ReplayError(f"no {PARAMS_FILE_NAME} in config/ or the package share; pass --params-file")
    options = EngineOptions.from_parameters({**read_node_parameters(params_file, NODE_NAME), **(parameters or {})})
    out_dir = Path(out_dir)
    try:  # before the run, not after it: a report that cannot be written would lose the whole replay
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ReplayError(f"cannot write the report to {out_dir}: {error.strerror or error}") from None
    with CameraBag(bag, topic, gt_topic) as camera_bag:
        # Scored and coloured with the model's own classes; a node we only connect to runs a model unknown here.
        info = ModelInfo(arch={}) if connect else read_info(options.checkpoint_path())
        tally = ReplayTally(camera_bag.frame_count, info.class_names, info.class_colors)
        context = {
            "mode": "offline" if offline else "live",
            "bag": str(bag),
            "topic": camera_bag.topic,
            "msgtype": camera_bag.msgtype,
            "gt_topic": camera_bag.gt_topic,
            "pacing": "as fast as possible" if rate is None else f"{rate:g}x recorded speed",
            "model": str(options.checkpoint_path()),
        }

        def bar(frames):
            return tqdm(frames, total=camera_bag.frame_count, unit="frame", desc="replay",
                        disable=None if progress is None else not progress)  # fmt: skip

        if offline:
            context["latency_definition"] = "engine.segment per frame, decoded frame in, labels out"
            replay_offline(camera_bag, tally, options, bar, on_output)
        else:
            from .live_replay import LiveReplay  # rclpy only for the live mode

            context["latency_definition"] = "publish to label received, over ROS 2"
            with LiveReplay(camera_bag, tally, record, frame_timeout_s, on_output, bar) as live:
                if not connect:
                    live.start_node(params_file, parameters or {}, out_dir / "node.log")
                live.run(rate)
    report = tally.report(**context)
    report["files"] = {key: str(path) for key, path in write_report(report, tally, out_dir).items()}
    return report


def replay_offline(camera_bag, tally, options: EngineOptions, bar, on_output) -> None:
    """The bag's frames through an engine built as road_seg_node builds its own, so both modes run alike."""
    engine = SegmentationEngine(options)
    frames = camera_bag.frames()
    first = next(frames)
    engine.segment(first.rgb)  # warm-up, so the numbers are the steady state
    started = time.perf_counter()
    for index, frame in enumerate(bar(itertools.chain([first], frames))):
        tally.frames_sent += 1
        began = time.perf_counter()
        labels = engine.segment(frame.rgb).labels
        tally.add_output(index, frame, labels, (time.perf_counter() - began) * 1000.0)
        if on_output is not None:
            on_output(frame.stamp_ns, labels)
    tally.elapsed_s = time.perf_counter() - started


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="road-seg-replay", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "bag",
        nargs="?",
        default=str(bundled_bag()),
        help="rosbag2 directory or .mcap/.db3 file (default: the bundled drive)",
    )
    parser.add_argument("--topic", help="image topic (default: /camera/image_raw[/compressed] or the only one)")
    parser.add_argument("--gt-topic", help="ground-truth topic, mono8 class ids (default: /camera/ground_truth)")
    pacing = parser.add_mutually_exclusive_group()
    pacing.add_argument(
        "--rate", type=positive_number, metavar="R", help="play at R times the recorded speed; count drops"
    )
    pacing.add_argument(
        "--as-fast-as-possible", action="store_true", help="send each frame once the last one's label is back (default)"
    )
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help="report folder (default: out)")
    parser.add_argument("--record", metavar="OUT_BAG", help="also write the input and the node's outputs to this bag")
    parser.add_argument("--offline", action="store_true", help="run the engine directly, without ROS")
    parser.add_argument("--params-file", help="the node's params (default: config/road_seg.yaml)")
    add_engine_arguments(parser, defaults=None)
    parser.add_argument("--connect", action="store_true", help="use a road_seg_node already running")
    parser.add_argument(
        "--timeout", type=positive_number, default=FRAME_TIMEOUT_S, help="seconds to wait for each label"
    )
    args = parser.parse_args(argv)
    if args.offline and (args.record or args.connect or args.rate):
        parser.error("--offline runs without ROS: --record, --connect and --rate need the live node")
    return args


def node_parameters_from_args(args) -> dict:
    """The engine flags given on the command line, as the node's parameters (they override the params file)."""
    given = given_engine_flags(args)
    return {name: given[field] for name, field in NODE_PARAMETERS.items() if field in given}


def _exit_on_sigterm(*_):
    raise SystemExit("road-seg-replay: terminated")  # unwinds the with-blocks: the node stops, the record closes


def main(argv=None):
    args = parse_args(argv)
    previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        report = run_replay(
            args.bag,
            args.out,
            topic=args.topic,
            gt_topic=args.gt_topic,
            rate=args.rate,
            offline=args.offline,
            record=args.record,
            params_file=args.params_file,
            parameters=node_parameters_from_args(args),
            connect=args.connect,
            frame_timeout_s=args.timeout,
        )
    except (BagError, ReplayError, CheckpointError, EngineError, ParamsFileError) as error:
        exit_with("road-seg-replay", error)
    except KeyboardInterrupt:
        exit_with("road-seg-replay", "interrupted")
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    print(format_summary(report))
    print(
        f"report: {report['files']['markdown']}"
        + (f", mosaic: {report['files']['mosaic']}" if "mosaic" in report["files"] else "")
    )


if __name__ == "__main__":
    main()
