"""The codec against hostile data: sizes are read from JPEG and PNG headers and checked before anything is
decoded, damaged data and inconsistent raw fields are each refused with their reason in one line."""

import os

import cv2
import numpy as np
import pytest
from hostile import BOMBS, damaged_compressed, inconsistent_raw, png_bomb

from road_seg_ros.core import codec
from road_seg_ros.core.codec import ImageError

NODE_DEFAULT_LIMIT = 3840 * 2160


def refused(function, *args, **kwargs) -> ImageError:
    with pytest.raises(ImageError) as error:
        function(*args, **kwargs)
    assert "\n" not in str(error.value)
    return error.value


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if OpenCV is asked to decode anything."""

    def decode(*_):
        raise AssertionError("cv2.imdecode was called")

    monkeypatch.setattr(codec.cv2, "imdecode", decode)


@pytest.mark.parametrize("limit", [0, NODE_DEFAULT_LIMIT, 10**9])
@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_bombs_are_refused_from_their_header_without_decoding(no_decoding, bomb, limit):
    make, (width, height) = BOMBS[bomb]
    error = refused(codec.compressed_to_rgb, make(), "png", max_pixels=limit)
    assert error.reason == codec.OVERSIZE and f"{width}x{height} has {width * height} pixels" in str(error)
    expected = f"max_input_pixels {limit}" if limit == NODE_DEFAULT_LIMIT else f"ceiling of {codec.PIXEL_CEILING}"
    assert expected in str(error)


def test_class_id_pngs_are_checked_from_their_header_too(no_decoding):
    assert refused(codec.compressed_to_labels, png_bomb(20000, 20000)).reason == codec.OVERSIZE


@pytest.mark.parametrize("name", sorted(damaged_compressed()))
def test_damaged_compressed_data_is_refused_with_its_reason(name):
    data, reason = damaged_compressed()[name]
    error = refused(codec.compressed_to_rgb, data, "jpeg")
    assert error.reason == reason, str(error)


@pytest.mark.parametrize("name", sorted(inconsistent_raw()))
def test_inconsistent_raw_fields_are_refused_with_their_reason(name):
    image, reason = inconsistent_raw()[name]
    error = refused(codec.raw_to_rgb, image)
    assert error.reason == reason, str(error)
    assert f"{image.width}x{image.height}" in str(error) or image.encoding in str(error) or "step" in str(error)


@pytest.mark.parametrize(
    ("kind", "flags", "shape"),
    [
        ("jpeg", [], (37, 53, 3)),
        ("jpeg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], (61, 29, 3)),
        ("jpeg", [cv2.IMWRITE_JPEG_RST_INTERVAL, 1], (16, 300, 3)),
        ("jpeg", [], (45, 70)),
        ("png", [], (37, 53, 3)),
        ("png", [], (9, 1000)),
    ],
)
def test_header_sizes_are_the_decoded_sizes(kind, flags, shape):
    pixels = cv2.resize(np.random.default_rng(3).integers(0, 256, (4, 4, 3), np.uint8), shape[1::-1])
    pixels = pixels if len(shape) == 3 else pixels[..., 0]
    encoded = cv2.imencode(f".{'jpg' if kind == 'jpeg' else kind}", pixels, flags)[1].ravel()
    assert codec.compressed_size(encoded, kind) == (shape[1], shape[0])
    assert codec.compressed_to_rgb(encoded).shape == (*shape[:2], 3)


def test_sixteen_bit_png_header_and_decode():
    pixels = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100).astype(np.uint16)
    encoded = cv2.imencode(".png", pixels)[1].ravel()
    assert codec.compressed_size(encoded, "png") == (30, 20)
    assert codec.compressed_to_rgb(encoded).shape == (20, 30, 3)


def test_the_ceiling_holds_whatever_the_limit():
    codec.check_size(8192, 4096, 0)
    codec.check_size(7680, 4320, 10**9)
    for limit in (0, 10**9):
        assert refused(codec.check_size, 8192, 4097, limit).reason == codec.OVERSIZE
    assert refused(codec.check_size, 100, 100, 9999).reason == codec.OVERSIZE
    codec.check_size(100, 100, 10000)


def test_a_complete_frame_at_the_limit_still_decodes():
    """A real (all-zero, 1-bit) 4000x2000 PNG passes the header check and decodes: the checks refuse only sizes."""
    rgb = codec.compressed_to_rgb(png_bomb(4000, 2000, full_data=True), max_pixels=4000 * 2000)
    assert rgb.shape == (2000, 4000, 3) and not rgb.any()


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an EXIF block (APP1) whose Orientation tag says ``orientation`` (6: rotate 90 degrees)."""
    ifd = b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01" + orientation.to_bytes(2, "big") + b"\x00\x00" + bytes(4)
    exif = b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08" + ifd
    return jpeg[:2] + b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif + jpeg[2:]


def test_jpeg_orientation_tags_are_ignored_so_labels_match_the_camera_frame():
    """A camera's pixels are the frame; rotating them by an EXIF tag would give labels of swapped size."""
    pixels = cv2.resize(np.random.default_rng(5).integers(0, 256, (4, 4, 3), np.uint8), (80, 40))
    jpeg = with_exif_orientation(cv2.imencode(".jpg", pixels)[1].tobytes(), 6)
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (80, 40, 3)  # OpenCV would rotate
    assert codec.compressed_size(np.frombuffer(jpeg, np.uint8), "jpeg") == (80, 40)
    assert codec.compressed_to_rgb(jpeg).shape == (40, 80, 3)


def corrupt_png() -> bytes:
    """A PNG whose image data is damaged: libpng says so on stderr itself."""
    pixels = np.random.default_rng(6).integers(0, 256, (32, 48, 3), np.uint8)
    png = bytearray(cv2.imencode(".png", pixels)[1].tobytes())
    png[60:80] = bytes(20)
    return bytes(png)


@pytest.mark.parametrize(
    ("data", "said"),
    [(corrupt_png(), "(libpng: IDAT: "), (corrupt_png()[:2000], "(opencv: PNG input buffer is incomplete)")],
)
def test_the_decoders_own_stderr_lines_end_up_in_the_error_not_on_stderr(capfd, data, said):
    for _ in range(3):  # one line per frame would reach stderr
        error = refused(codec.compressed_to_rgb, data)
        assert error.reason == codec.CORRUPT_COMPRESSED and f"could not be decoded {said}" in str(error)
    assert capfd.readouterr().err == ""
    assert codec.compressed_to_rgb(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1]).shape == (8, 8, 3)


def test_other_lines_written_to_stderr_during_a_decode_go_on_to_stderr(capfd):
    """Another thread's log line, written while a decode captures file descriptor 2, still reaches stderr."""
    lines = []
    with codec.decoder_output(lines):
        os.write(2, b"libpng warning: iCCP: known incorrect sRGB profile\n")
        os.write(2, b"[INFO] [road_seg]: another thread's line\n")
    assert lines == ["libpng: iCCP: known incorrect sRGB profile"]
    assert capfd.readouterr().err == "[INFO] [road_seg]: another thread's line\n"
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"  # file descriptor 2 is stderr again
