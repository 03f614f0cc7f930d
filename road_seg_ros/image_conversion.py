"""sensor_msgs Image / CompressedImage <-> numpy, for rclpy messages.

Decoding always yields an H x W x 3 uint8 RGB array, the engine's input.
The common encodings are converted here with numpy and OpenCV (no copy at
all for unpadded rgb8); other encodings go through cv_bridge when a ROS 2
distro provides it. Every problem with a message raises ``ImageError`` (a
ValueError) whose ``reason`` is a short key the node counts by and whose
message names the problem precisely.
"""

import array
from dataclasses import dataclass

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

try:
    from cv_bridge import CvBridge, CvBridgeError
except ImportError:  # not in a ROS 2 distro: the encodings below are all we read
    CvBridge = CvBridgeError = None

# Reasons a frame is rejected; the node's diagnostics count frames by these keys.
UNSUPPORTED_ENCODING = "unsupported_encoding"
SHORT_DATA = "short_data"
ZERO_SIZE = "zero_size"
CORRUPT_COMPRESSED = "corrupt_compressed"
OVERSIZE = "oversize"


class ImageError(ValueError):
    """A message that cannot be turned into a frame; ``reason`` is one of the keys above."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class _Encoding:
    channels: int
    bytes_per_channel: int
    to_rgb: int | None  # cv2 colour conversion code; None when the channels are already RGB


_ENCODINGS = {
    "rgb8": _Encoding(3, 1, None),
    "bgr8": _Encoding(3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": _Encoding(4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": _Encoding(4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": _Encoding(1, 1, cv2.COLOR_GRAY2RGB),
    "8UC1": _Encoding(1, 1, cv2.COLOR_GRAY2RGB),
    "8UC3": _Encoding(3, 1, cv2.COLOR_BGR2RGB),  # OpenCV's own images are BGR
    "rgb16": _Encoding(3, 2, None),
    "bgr16": _Encoding(3, 2, cv2.COLOR_BGR2RGB),
    "rgba16": _Encoding(4, 2, cv2.COLOR_RGBA2RGB),
    "bgra16": _Encoding(4, 2, cv2.COLOR_BGRA2RGB),
    "mono16": _Encoding(1, 2, cv2.COLOR_GRAY2RGB),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def image_to_rgb(msg: Image, max_pixels: int = 0) -> np.ndarray:
    """sensor_msgs/Image -> H x W x 3 uint8 RGB; a view of ``msg.data`` when it is unpadded rgb8.

    ``max_pixels`` (0: no limit) rejects larger frames before any conversion work.
    """
    if msg.encoding not in _ENCODINGS and CvBridge is not None:
        _check_size(msg, max_pixels)
        return _convert_with_cv_bridge(msg)
    pixels = _stored_pixels(msg, max_pixels)  # raises for an encoding it does not know
    to_rgb = _ENCODINGS[msg.encoding].to_rgb
    return pixels if to_rgb is None else cv2.cvtColor(pixels, to_rgb)


def image_to_array(msg: Image) -> np.ndarray:
    """The pixels as stored, 8 bits per channel: H x W for mono8 (e.g. ~/label), else H x W x channels."""
    pixels = _stored_pixels(msg, max_pixels=0)
    return pixels[..., 0] if pixels.shape[2] == 1 else pixels


def _stored_pixels(msg: Image, max_pixels: int) -> np.ndarray:
    """H x W x channels uint8 in the message's channel order, without row padding; a view where possible."""
    _check_size(msg, max_pixels)
    height, width, encoding = msg.height, msg.width, msg.encoding
    spec = _ENCODINGS.get(encoding)
    if spec is None:
        raise ImageError(
            UNSUPPORTED_ENCODING, f"unsupported encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    row_bytes = width * spec.channels * spec.bytes_per_channel
    if msg.step < row_bytes:
        raise ImageError(
            SHORT_DATA, f"step {msg.step} is smaller than one {width}-pixel {encoding} row ({row_bytes} B)"
        )
    needed = msg.step * height
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < needed:
        raise ImageError(
            SHORT_DATA,
            f"{encoding} image {width}x{height} has {data.size} B of data, shorter than step*height "
            f"= {msg.step}*{height} = {needed} B",
        )
    rows = data[:needed].reshape(height, msg.step)[:, :row_bytes]
    if spec.bytes_per_channel == 2:
        rows = _to_8bit(rows, big_endian=bool(msg.is_bigendian))
    return rows.reshape(height, width, spec.channels)


def compressed_to_rgb(msg: CompressedImage, max_pixels: int = 0) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png) -> H x W x 3 uint8 RGB."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageError(ZERO_SIZE, f"compressed image ({msg.format or 'no format'}) has no data")
    kind = _compressed_kind(data[:8].tobytes())
    if kind is None:
        raise ImageError(
            UNSUPPORTED_ENCODING,
            f"compressed image format {msg.format!r} is not jpeg or png (first bytes {data[:4].tobytes()!r})",
        )
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(CORRUPT_COMPRESSED, f"corrupt {kind}: {data.size} B could not be decoded")
    _check_pixels(bgr.shape[1], bgr.shape[0], max_pixels)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def array_to_image(pixels: np.ndarray, encoding: str, header=None) -> Image:
    """H x W (mono8) or H x W x 3 (rgb8/bgr8) uint8 -> sensor_msgs/Image, copying the pixels once."""
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    spec = _ENCODINGS.get(encoding)
    if pixels.dtype != np.uint8 or spec is None or spec.bytes_per_channel != 1 or spec.channels != channels:
        raise ValueError(f"cannot publish a {pixels.dtype} array of shape {pixels.shape} as {encoding!r}")
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(pixels).data)
    height, width = pixels.shape[:2]
    # check_fields=True makes the setter keep our array as is instead of copying it again.
    msg = Image(height=height, width=width, encoding=encoding, step=width * channels, check_fields=True)
    msg.data = data
    if header is not None:
        msg.header = header
    return msg


def rgb_to_image(rgb: np.ndarray, header=None, encoding: str = "rgb8") -> Image:
    """H x W x 3 RGB -> Image in ``encoding`` (rgb8, bgr8 or mono8, as cameras publish)."""
    if encoding == "bgr8":
        rgb = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif encoding == "mono8":
        rgb = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return array_to_image(rgb, encoding, header)


def rgb_to_compressed(rgb: np.ndarray, header=None, fmt: str = "jpeg", jpeg_quality: int = 90) -> CompressedImage:
    """H x W x 3 RGB -> CompressedImage in ``fmt`` (jpeg or png), as image_transport's compressed plugin sends it."""
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} frame as {fmt}")
    msg = CompressedImage(format=f"rgb8; {fmt} compressed bgr8", check_fields=True)
    msg.data = array.array("B", encoded.tobytes())
    if header is not None:
        msg.header = header
    return msg


def _check_size(msg: Image, max_pixels: int) -> None:
    if msg.height == 0 or msg.width == 0:
        raise ImageError(ZERO_SIZE, f"zero-sized image: {msg.width}x{msg.height} ({msg.encoding})")
    _check_pixels(msg.width, msg.height, max_pixels)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if max_pixels and width * height > max_pixels:
        raise ImageError(
            OVERSIZE, f"image {width}x{height} has {width * height} pixels, over max_input_pixels {max_pixels}"
        )


def _to_8bit(rows: np.ndarray, big_endian: bool) -> np.ndarray:
    """16-bit channels (in the message's byte order) -> their high bytes."""
    height = rows.shape[0]
    wide = np.ascontiguousarray(rows).view(">u2" if big_endian else "<u2").reshape(height, -1)
    return (wide >> 8).astype(np.uint8)


def _compressed_kind(head: bytes) -> str | None:
    """The compressed format from the data's magic bytes (the format string is free text)."""
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head.startswith(_PNG_MAGIC):
        return "png"
    return None


def _convert_with_cv_bridge(msg: Image) -> np.ndarray:
    """The encodings cv_bridge adds (bayer, yuv422, 32FC1, ...) when a ROS 2 distro provides it."""
    try:
        return CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8")
    except (CvBridgeError, TypeError, ValueError) as error:
        supported = ", ".join(SUPPORTED_ENCODINGS)
        message = f"unsupported encoding {msg.encoding!r} (cv_bridge: {error}; read natively: {supported})"
        raise ImageError(UNSUPPORTED_ENCODING, message) from None
