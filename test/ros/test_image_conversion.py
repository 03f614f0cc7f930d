"""sensor_msgs Image / CompressedImage <-> numpy: every encoding, row padding, byte order and each bad message."""

import array

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from road_seg_ros.core import codec
from road_seg_ros.ros.image_conversion import (
    ImageError,
    array_to_image,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_compressed,
    rgb_to_image,
)

RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)
GRAY = cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY)


def raw_image(pixels: np.ndarray, encoding: str, padding: int = 0, big_endian: bool = False) -> Image:
    """An Image holding ``pixels`` row by row, each row followed by ``padding`` bytes."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((height, padding), 0xEE, np.uint8)], axis=1)
    msg = Image(height=height, width=width, encoding=encoding, step=padded.shape[1], is_bigendian=big_endian)
    msg.data = array.array("B", padded.tobytes())
    return msg


def with_alpha(rgb):
    return np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize(
    ("encoding", "pixels", "expected"),
    [
        ("rgb8", RGB, RGB),
        ("bgr8", RGB[..., ::-1], RGB),
        ("rgba8", with_alpha(RGB), RGB),
        ("bgra8", with_alpha(RGB[..., ::-1]), RGB),
        ("mono8", GRAY, np.dstack([GRAY] * 3)),
        ("8UC3", RGB[..., ::-1], RGB),
    ],
)
def test_eight_bit_encodings_decode_to_rgb(encoding, pixels, expected, padding):
    rgb = image_to_rgb(raw_image(np.ascontiguousarray(pixels), encoding, padding))
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 7, 3)
    assert np.array_equal(rgb, expected)


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("encoding", ["rgb16", "bgr16", "mono16"])
def test_sixteen_bit_encodings_keep_the_high_byte_in_either_byte_order(encoding, big_endian):
    wide = RGB.astype(np.uint16) * 256 + 17  # low byte is noise that must not leak through
    pixels = {"rgb16": wide, "bgr16": wide[..., ::-1], "mono16": GRAY.astype(np.uint16) * 256 + 17}[encoding]
    ordered = np.ascontiguousarray(pixels).astype(">u2" if big_endian else "<u2")
    rgb = image_to_rgb(raw_image(ordered, encoding, padding=2, big_endian=big_endian))
    assert np.array_equal(rgb, np.dstack([GRAY] * 3) if encoding == "mono16" else RGB)


def test_unpadded_rgb8_is_a_view_of_the_message_not_a_copy():
    msg = raw_image(RGB, "rgb8")
    assert np.shares_memory(image_to_rgb(msg), np.frombuffer(msg.data, np.uint8))


def test_raw_to_array_keeps_the_stored_layout():
    labels = (np.arange(35, dtype=np.uint8) % 11).reshape(5, 7)
    assert np.array_equal(codec.raw_to_array(raw_image(labels, "mono8", padding=1)), labels)
    assert np.array_equal(codec.raw_to_array(raw_image(np.ascontiguousarray(RGB[..., ::-1]), "bgr8")), RGB[..., ::-1])


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_rgb_to_image_round_trips(encoding):
    header = Header(frame_id="camera")
    msg = rgb_to_image(RGB, header, encoding=encoding)
    assert (msg.encoding, msg.height, msg.width, msg.header.frame_id) == (encoding, 5, 7, "camera")
    assert msg.step == 7 * (1 if encoding == "mono8" else 3) and len(msg.data) == msg.step * 5
    assert np.array_equal(image_to_rgb(msg), np.dstack([GRAY] * 3) if encoding == "mono8" else RGB)


def test_array_to_image_copies_a_non_contiguous_array_once_and_refuses_mismatches():
    labels = np.arange(5 * 14, dtype=np.uint8).reshape(5, 14)[:, ::2]  # a strided view
    msg = array_to_image(labels, "mono8")
    assert np.array_equal(np.frombuffer(msg.data, np.uint8).reshape(5, 7), labels)
    with pytest.raises(ValueError, match="cannot publish"):
        array_to_image(labels, "rgb8")
    with pytest.raises(ValueError, match="cannot publish"):
        array_to_image(RGB.astype(np.uint16), "rgb8")


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_round_trip(fmt):
    smooth = cv2.resize(RGB, (56, 40), interpolation=cv2.INTER_LINEAR)  # jpeg keeps smooth frames close
    msg = rgb_to_compressed(smooth, Header(frame_id="camera"), fmt=fmt, jpeg_quality=95)
    assert fmt in msg.format and msg.header.frame_id == "camera"
    rgb = compressed_to_rgb(msg)
    assert rgb.shape == smooth.shape
    assert np.abs(rgb.astype(int) - smooth).mean() <= (0 if fmt == "png" else 4)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_keeps_channel_order(fmt):
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    rgb = compressed_to_rgb(rgb_to_compressed(red, fmt=fmt))
    assert rgb[..., 0].min() > 240 and rgb[..., 1:].max() < 15


def test_compressed_grayscale_png_becomes_three_channels():
    ok, encoded = cv2.imencode(".png", GRAY)
    msg = CompressedImage(format="mono8; png compressed mono8", data=array.array("B", encoded.tobytes()))
    assert np.array_equal(compressed_to_rgb(msg), np.dstack([GRAY] * 3))


def _error(function, msg, **kwargs) -> ImageError:
    with pytest.raises(ImageError) as raised:
        function(msg, **kwargs)
    assert isinstance(raised.value, ValueError)
    return raised.value


def test_unsupported_encoding_is_named_with_the_supported_ones():
    error = _error(image_to_rgb, raw_image(RGB, "yuv_martian"))
    assert error.reason == codec.UNSUPPORTED_ENCODING
    assert "'yuv_martian'" in str(error) and "rgb8" in str(error)


def test_data_shorter_than_step_times_height_is_refused_with_both_sizes():
    msg = raw_image(RGB, "rgb8", padding=2)
    msg.data = msg.data[:-5]
    error = _error(image_to_rgb, msg)
    assert error.reason == codec.SHORT_DATA
    assert f"{len(msg.data)} B" in str(error) and "23*5 = 115 B" in str(error)


def test_step_smaller_than_a_row_is_refused():
    msg = raw_image(RGB, "rgb8")
    msg.step = 20
    error = _error(image_to_rgb, msg)
    assert error.reason == codec.SHORT_DATA and "step 20" in str(error)


@pytest.mark.parametrize(("width", "height"), [(0, 5), (7, 0)])
def test_zero_sized_image_is_refused(width, height):
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    error = _error(image_to_rgb, msg)
    assert error.reason == codec.ZERO_SIZE and f"{width}x{height}" in str(error)


def test_empty_compressed_image_is_refused():
    error = _error(compressed_to_rgb, CompressedImage(format="jpeg"))
    assert error.reason == codec.ZERO_SIZE


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_corrupt_or_truncated_compressed_images_are_refused(fmt):
    good = rgb_to_compressed(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8), fmt=fmt)
    truncated = CompressedImage(format=good.format, data=good.data[: len(good.data) // 2])
    error = _error(compressed_to_rgb, truncated)
    assert error.reason == codec.CORRUPT_COMPRESSED and f"corrupt {fmt}" in str(error)


def test_compressed_data_that_is_neither_jpeg_nor_png_is_refused():
    error = _error(compressed_to_rgb, CompressedImage(format="h264", data=array.array("B", b"\x00\x00\x00\x01gd")))
    assert error.reason == codec.UNSUPPORTED_ENCODING and "'h264'" in str(error)


def test_oversize_frames_are_refused_before_conversion_and_after_decoding():
    error = _error(image_to_rgb, raw_image(RGB, "rgb8"), max_pixels=34)
    assert error.reason == codec.OVERSIZE and "7x5" in str(error) and "34" in str(error)
    assert _error(compressed_to_rgb, rgb_to_compressed(RGB, fmt="png"), max_pixels=34).reason == "oversize"
    assert image_to_rgb(raw_image(RGB, "rgb8"), max_pixels=35).shape == (5, 7, 3)


def test_rgb_to_compressed_refuses_other_formats():
    with pytest.raises(ValueError, match="'webp'"):
        rgb_to_compressed(RGB, fmt="webp")
