"""sensor_msgs Image / CompressedImage <-> numpy for rclpy messages, through the one image codec (core.codec).

Decoding yields the engine's H x W x 3 uint8 RGB (no copy at all for
unpadded rgb8); encodings the codec does not read go through cv_bridge when
a ROS 2 distro provides it. Every problem raises ``ImageError``.
"""

import array

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from ..core import codec
from ..core.codec import ImageError

try:
    from cv_bridge import CvBridge, CvBridgeError
except ImportError:  # not in a ROS 2 distro: the codec's encodings are all we read
    CvBridge = CvBridgeError = None

__all__ = [
    "ImageError",
    "array_to_compressed",
    "array_to_image",
    "compressed_to_rgb",
    "image_to_rgb",
    "rgb_to_compressed",
]


def image_to_rgb(msg: Image, max_pixels: int = 0) -> np.ndarray:
    """sensor_msgs/Image -> H x W x 3 uint8 RGB; ``max_pixels`` (0: no limit) rejects larger frames first."""
    if msg.encoding not in codec.ENCODINGS and CvBridge is not None:
        codec.check_size(msg.width, msg.height, max_pixels, f"{msg.encoding} image")
        return _convert_with_cv_bridge(msg)
    return codec.raw_to_rgb(msg, max_pixels)


def compressed_to_rgb(msg: CompressedImage, max_pixels: int = 0) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png) -> H x W x 3 uint8 RGB."""
    return codec.compressed_to_rgb(msg.data, msg.format, max_pixels)


def array_to_image(pixels: np.ndarray, encoding: str, header=None) -> Image:
    """H x W (mono8) or H x W x C uint8 -> sensor_msgs/Image, copying the pixels once."""
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    spec = codec.ENCODINGS.get(encoding)
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
    return array_to_image(codec.from_rgb(rgb, encoding), encoding, header)


def array_to_compressed(pixels: np.ndarray, encoding: str, header=None, fmt: str = "jpeg", jpeg_quality=None):
    """H x W (mono8) or H x W x 3 (rgb8) uint8 -> CompressedImage in ``fmt`` (jpeg or png), as image_transport's
    compressed plugin sends it; PNG is lossless (a label image decodes to exactly its class ids)."""
    quality = codec.JPEG_QUALITY if jpeg_quality is None else jpeg_quality
    encoded = codec.encode_compressed(pixels, fmt, quality)
    msg = CompressedImage(format=codec.compressed_format_string(fmt, encoding), check_fields=True)
    msg.data = array.array("B", encoded.tobytes())
    if header is not None:
        msg.header = header
    return msg


def rgb_to_compressed(rgb: np.ndarray, header=None, fmt: str = "jpeg", jpeg_quality=codec.JPEG_QUALITY):
    """H x W x 3 RGB -> CompressedImage in ``fmt`` (jpeg or png), as a compressed camera sends it."""
    return array_to_compressed(rgb, "rgb8", header, fmt, jpeg_quality)


def _convert_with_cv_bridge(msg: Image) -> np.ndarray:
    """The encodings cv_bridge adds (bayer, yuv422, 32FC1, ...) when a ROS 2 distro provides it."""
    try:
        return CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8")
    except (CvBridgeError, TypeError, ValueError) as error:
        supported = ", ".join(codec.SUPPORTED_ENCODINGS)
        message = f"unsupported encoding {msg.encoding!r} (cv_bridge: {error}; read natively: {supported})"
        raise ImageError(codec.UNSUPPORTED_ENCODING, message) from None
