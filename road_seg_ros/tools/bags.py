"""Camera rosbag2 files, mcap or sqlite3: writing CamVid drives, reading frames and ground truth back.

Everything goes through ``rosbags``, so bags are written and read without a
ROS installation. A bag is a rosbag2 directory or a single ``.mcap`` file
(``ros2 bag play``, RViz and Foxglove open both). Whatever is wrong with a
bag raises ``BagError`` with a one-line message naming the problem.
"""

import math
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Writer, WriterError
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.typesys import Stores, get_typestore

from ..core import codec
from ..core.codec import ImageError
from ..core.files import one_line
from ..core.frames import split_ns, stamp_ns
from ..core.resources import shipped_or_default

IMAGE_TOPIC = "/camera/image_raw"
COMPRESSED_TOPIC = f"{IMAGE_TOPIC}/compressed"
CAMERA_INFO_TOPIC = "/camera/camera_info"
GROUND_TRUTH_TOPIC = "/camera/ground_truth"
FRAME_ID = "camera"

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"

STORAGES = ("mcap", "sqlite3")
ENCODINGS = codec.WRITABLE_ENCODINGS + codec.COMPRESSED_FORMATS  # what a drive may be written as
GROUND_TRUTH_ENCODINGS = ("mono8", "8UC1")
# CamVid frames have no clock; a fixed start (January 2008, when the drives were filmed) keeps stamps reproducible.
START_TIME_NS = 1_199_145_600 * 10**9

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
BUNDLED_BAG_NAME = "camvid_seq05vd.mcap"


class BagError(RuntimeError):
    """A bag cannot be written or read as a camera drive; the message is one line naming why."""


def bundled_bag() -> Path:
    """The CamVid drive shipped with the package: bags/ in a source checkout, else the installed share."""
    return shipped_or_default("bags", BUNDLED_BAG_NAME)


@dataclass
class BagFrame:
    stamp_ns: int  # the image header stamp: the key outputs and ground truth are matched by
    rgb: np.ndarray  # H x W x 3 uint8
    ground_truth: np.ndarray | None  # H x W uint8 class ids, None when the bag has none for this stamp
    rawdata: bytes  # the image message exactly as recorded (CDR), for republishing unchanged
    msgtype: str


# --------------------------------------------------------------------------- writing


class BagRecorder:
    """A new bag, written message by message from serialised (CDR) data; topics are added on first use.

    A ``path`` ending in ``.mcap`` becomes a single MCAP file, anything else
    a rosbag2 directory. Use it as a context manager: the bag is complete
    (indexed, with its metadata) once closed.
    """

    def __init__(self, path, storage="mcap"):
        if storage not in STORAGES:
            raise BagError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} exists already; not overwriting it")
        single_file = self.path.suffix == ".mcap"
        if single_file and storage != "mcap":
            raise BagError(f"{self.path} names an MCAP file but storage is {storage!r}")
        self._guard(self.path.parent.mkdir, parents=True, exist_ok=True)
        # rosbags writes directories; a single file is written in one beside the target, then moved out.
        self._scratch = Path(self._guard(tempfile.mkdtemp, dir=self.path.parent)) if single_file else None
        bag_dir = self._scratch / self.path.stem if single_file else self.path
        self._writer = Writer(bag_dir, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin[storage.upper()])
        if storage == "mcap":
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)  # MCAP chunk compression
        self._connections = {}
        self._guard(self._writer.open)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:  # nothing half-written is left under the bag's name: a rerun is not refused as 'exists already'
            self._writer.abort()
            self._remove_scratch()
            if self._scratch is None:
                shutil.rmtree(self.path, ignore_errors=True)  # a directory bag: it did not exist before (see above)

    def write(self, topic: str, msgtype: str, stamp: int, rawdata: bytes) -> None:
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._guard(self._writer.add_connection, topic, msgtype, typestore=TYPESTORE)
            self._connections[topic] = connection
        self._guard(self._writer.write, connection, stamp, rawdata)

    def close(self) -> None:
        self._guard(self._writer.close)
        if self._scratch is not None:
            shutil.move(next(self._scratch.rglob("*.mcap")), self.path)
            self._remove_scratch()

    def _remove_scratch(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def _guard(self, action, *args, **kwargs):
        try:
            return action(*args, **kwargs)
        except (WriterError, OSError) as error:
            raise BagError(f"cannot write bag {self.path}: {_reason(error)}") from None


def write_camera_bag(
    path,
    frames: Iterable[tuple[np.ndarray, np.ndarray | None]],
    storage="mcap",
    encoding="rgb8",
    rate_hz=1.0,
    jpeg_quality=codec.JPEG_QUALITY,
) -> int:
    """Writes (rgb, ground truth or None) pairs as a camera drive; returns the number of frames.

    ``encoding`` is a raw encoding (on IMAGE_TOPIC) or a compressed format (on
    COMPRESSED_TOPIC). Each frame also gets a CameraInfo and, when given, its
    ground truth (mono8 class ids), all with the same stamp.
    """
    if encoding not in ENCODINGS:
        raise BagError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if not 0 < rate_hz < math.inf:
        raise BagError(f"rate must be a positive number, got {rate_hz} Hz")
    compressed = encoding in codec.COMPRESSED_FORMATS
    count = 0
    with BagRecorder(path, storage) as recorder:
        for rgb, ground_truth in frames:
            stamp = START_TIME_NS + round(count * 1e9 / rate_hz)
            header = _header(stamp)
            recorder.write(CAMERA_INFO_TOPIC, CAMERA_INFO_TYPE, stamp, _serialize(_camera_info(header, rgb.shape)))
            if compressed:
                recorder.write(
                    COMPRESSED_TOPIC,
                    COMPRESSED_TYPE,
                    stamp,
                    _serialize(_compressed(rgb, header, encoding, jpeg_quality)),
                )
            else:
                recorder.write(IMAGE_TOPIC, IMAGE_TYPE, stamp, _serialize(_image_message(rgb, header, encoding)))
            if ground_truth is not None:
                truth = _image_message(ground_truth, header, "mono8")
                recorder.write(GROUND_TRUTH_TOPIC, IMAGE_TYPE, stamp, _serialize(truth))
            count += 1
    return count


def _serialize(message) -> bytes:
    return bytes(TYPESTORE.serialize_cdr(message, message.__msgtype__))


def ros_time(nanoseconds: int):
    """A rosbags builtin_interfaces/Time."""
    sec, nanosec = split_ns(nanoseconds)
    return TYPESTORE.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)


def _header(nanoseconds: int):
    return TYPESTORE.types["std_msgs/msg/Header"](stamp=ros_time(nanoseconds), frame_id=FRAME_ID)


def _image_message(pixels: np.ndarray, header, encoding: str):
    """rgb8, bgr8 or mono8 from an RGB frame; mono8 from an H x W array (class ids) as is."""
    if pixels.ndim == 3:
        pixels = codec.from_rgb(pixels, encoding)
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return TYPESTORE.types[IMAGE_TYPE](
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels,
        data=np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1),
    )


def _compressed(rgb: np.ndarray, header, fmt: str, jpeg_quality: int):
    try:
        encoded = codec.encode_compressed(rgb, fmt, jpeg_quality)
    except ValueError as error:
        raise BagError(str(error)) from None
    return TYPESTORE.types[COMPRESSED_TYPE](header=header, format=codec.compressed_format_string(fmt), data=encoded)


def _camera_info(header, shape):
    """Size only: CamVid publishes no calibration, and an all-zero K means 'uncalibrated' in ROS."""
    height, width = shape[:2]
    return TYPESTORE.types[CAMERA_INFO_TYPE](
        header=header,
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.zeros(9),
        r=np.eye(3).ravel(),
        p=np.zeros(12),
        binning_x=0,
        binning_y=0,
        roi=TYPESTORE.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )


# --------------------------------------------------------------------------- reading


class CameraBag:
    """A bag opened as a camera drive: one image topic, optionally a ground-truth topic.

    ``topic`` defaults to IMAGE_TOPIC, else COMPRESSED_TOPIC, else the only
    image topic in the bag; ``gt_topic`` defaults to GROUND_TRUTH_TOPIC when
    present (no ground truth otherwise). Opening checks the first frame, so a
    bag with an unsupported encoding fails here and not halfway through a run.
    """

    def __init__(self, path, topic=None, gt_topic=None, ground_truth=True):
        """``ground_truth`` False: the bag's ground truth is never read, whatever topics it has."""
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"no bag at {self.path}")
        if self.path.suffix == ".bag":  # rosbags reads them, but their messages are not ROS 2 (CDR) data
            raise BagError(f"{self.path} is a ROS 1 bag; convert it first: rosbags-convert --src {self.path}")
        try:
            self._reader = AnyReader([self.path], default_typestore=TYPESTORE)
            self._reader.open()
        except Exception as error:  # rosbags' parsers raise many kinds (apsw, zstd, struct, ...): all mean damage
            raise BagError(f"cannot read bag {self.path} (corrupt or not a rosbag2): {_reason(error)}") from None
        try:
            self.topic = self._pick_image_topic(topic)
            self.gt_topic = self._pick_gt_topic(gt_topic) if ground_truth else None
            self._connections = [c for c in self._reader.connections if c.topic == self.topic]
            self.msgtype = self._connections[0].msgtype
            self.frame_count = sum(c.msgcount for c in self._connections)
            self._check_first_frame()
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self) -> None:
        if self._reader.stack is not None:
            self._reader.close()

    @property
    def image_topics(self) -> dict[str, str]:
        """Every image topic in the bag: name -> message type."""
        return {c.topic: c.msgtype for c in self._reader.connections if c.msgtype in (IMAGE_TYPE, COMPRESSED_TYPE)}

    def frames(self) -> Iterator[BagFrame]:
        """The frames in recording order, each with its ground truth when the bag has it."""
        truths = self._ground_truths()
        for rawdata, message in self._messages(self._connections):
            stamp = stamp_ns(message.header)
            rgb = decode_frame(message, f"{self.topic} at stamp {stamp}")
            truth = truths.get(stamp)
            if truth is not None and truth.shape != rgb.shape[:2]:
                raise BagError(
                    f"ground truth at stamp {stamp} is {truth.shape[1]}x{truth.shape[0]} "
                    f"but its frame is {rgb.shape[1]}x{rgb.shape[0]}"
                )
            yield BagFrame(stamp, rgb, truth, rawdata, self.msgtype)

    def _pick_image_topic(self, topic) -> str:
        images = self.image_topics
        if topic is not None:
            if topic not in images:
                raise BagError(f"topic {topic} is not an image topic of {self.path}; {self._describe(images)}")
            return topic
        for preferred in (IMAGE_TOPIC, COMPRESSED_TOPIC):
            if preferred in images:
                return preferred
        candidates = [name for name in images if name != GROUND_TRUTH_TOPIC]
        if len(candidates) != 1:
            reason = "no camera image topic" if not candidates else "several image topics (choose one with --topic)"
            raise BagError(f"{self.path} has {reason}; {self._describe(images)}")
        return candidates[0]

    def _pick_gt_topic(self, gt_topic) -> str | None:
        images = self.image_topics
        if gt_topic is None:
            return GROUND_TRUTH_TOPIC if GROUND_TRUTH_TOPIC in images else None
        if gt_topic not in images:
            raise BagError(
                f"ground-truth topic {gt_topic} is not an image topic of {self.path}; {self._describe(images)}"
            )
        return gt_topic

    def _describe(self, images: dict[str, str]) -> str:
        if images:
            return "image topics there: " + ", ".join(
                f"{name} ({kind.rsplit('/', 1)[-1]})" for name, kind in images.items()
            )
        others = sorted({c.topic for c in self._reader.connections})
        return f"topics there: {', '.join(others)} (none of them images)" if others else "the bag has no topics"

    def _check_first_frame(self) -> None:
        first = next(self._messages(self._connections), None)
        if first is None:
            raise BagError(f"{self.path} has no frames on {self.topic}")
        message = first[1]
        decode_frame(message, f"{self.topic} at stamp {stamp_ns(message.header)}")

    def _ground_truths(self) -> dict[int, np.ndarray]:
        if self.gt_topic is None:
            return {}
        connections = [c for c in self._reader.connections if c.topic == self.gt_topic]
        truths = {}
        for _, message in self._messages(connections):
            truths[stamp_ns(message.header)] = decode_ground_truth(message, self.gt_topic)
        return truths

    def _messages(self, connections) -> Iterator[tuple[bytes, object]]:
        """(raw CDR, deserialised message) pairs; a read failure means the file is damaged."""
        try:
            for connection, _, rawdata in self._reader.messages(connections=connections):
                yield bytes(rawdata), self._reader.deserialize(rawdata, connection.msgtype)
        except Exception as error:  # as on opening: whatever the parser raises, the file is damaged
            raise BagError(f"bag {self.path} is corrupt: {_reason(error)}") from None


def decode_frame(message, where: str, max_pixels: int = 0) -> np.ndarray:
    """A rosbags Image or CompressedImage -> H x W x 3 uint8 RGB, decoded by the node's codec."""
    try:
        if hasattr(message, "format"):
            return codec.compressed_to_rgb(message.data, message.format, max_pixels)
        return np.array(codec.raw_to_rgb(message, max_pixels))  # a writable copy, not a view of the message
    except ImageError as error:
        raise BagError(f"{error} on {where}") from None


def decode_ground_truth(message, topic: str) -> np.ndarray:
    """A mono8 Image (or lossless png CompressedImage) of class ids -> H x W uint8."""
    where = f"{topic} at stamp {stamp_ns(message.header)}"
    if not hasattr(message, "format") and message.encoding not in GROUND_TRUTH_ENCODINGS:
        raise BagError(f"unsupported ground-truth encoding {message.encoding!r} on {where} (mono8 class ids)")
    try:
        if hasattr(message, "format"):
            return codec.compressed_to_labels(message.data)
        return codec.raw_to_array(message).copy()
    except ImageError as error:
        raise BagError(f"ground truth on {where}: {error}") from None


def _reason(error: BaseException) -> str:
    return one_line(error) or type(error).__name__
