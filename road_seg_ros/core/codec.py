"""The one image codec: camera message fields or compressed bytes <-> numpy, for the node and the bag tools alike.

Decoding always yields an H x W x 3 uint8 RGB array, the engine's input.
Raw images are read from any object with sensor_msgs/Image's fields
(``height``, ``width``, ``encoding``, ``step``, ``data``, ``is_bigendian``):
rclpy messages and rosbags messages both are. Every problem raises
``ImageError`` (a ValueError) whose ``reason`` is a short key the node counts
frames by and whose message names the problem precisely.

Memory is bounded before any work: raw sizes are checked against the pixel
limit before conversion, and JPEG and PNG sizes are read from their headers
(SOF, IHDR) before decoding, so a few hundred bytes claiming 65535x65535
pixels cost nothing. With no limit asked for, PIXEL_CEILING still applies.

libpng prints its own ``libpng error: ...`` line to the process's stderr for every corrupt PNG (and OpenCV
its ``[ WARN:...]`` for a truncated one), outside any caller's logging: a corrupt stream would print one per
frame. PNG decodes therefore run with file descriptor 2 captured; those lines end up in the ImageError's
message, and anything else written to stderr meanwhile (another thread's log) goes on to stderr afterwards.
"""

import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

# Reasons a frame is rejected; the node's diagnostics count frames by these keys.
UNSUPPORTED_ENCODING = "unsupported_encoding"
SHORT_DATA = "short_data"
ZERO_SIZE = "zero_size"
CORRUPT_COMPRESSED = "corrupt_compressed"
OVERSIZE = "oversize"
REJECT_REASONS = (UNSUPPORTED_ENCODING, SHORT_DATA, ZERO_SIZE, CORRUPT_COMPRESSED, OVERSIZE)

# The most pixels any frame may have, whatever the caller's limit (0 included): 2^25, as 8192x4096 (8K UHD,
# 7680x4320, fits). The node holds several copies of a frame (decoded, RGB, labels, colours, overlay, their
# messages): with every output subscribed, one 8192x4096 PNG took its peak RSS from 0.57 to 1.62 GB here
# (8192x8192: 0.81 to 2.38 GB). A 30000x30000 JPEG bomb of 691 bytes, decoded blindly, costs 6 GB.
PIXEL_CEILING = 2**25
# A progressive JPEG is decoded in one pass over the whole frame per scan; encoders write about 10
# (libjpeg's default progression has 10). Thousands of tiny scans make a small file decode for minutes.
MAX_JPEG_SCANS = 100

# Lines the decoders write to stderr themselves: libpng's errors and warnings, OpenCV's own log lines.
DECODER_LINE_PREFIXES = ("libpng ", "[ WARN:", "[ERROR:", "[ INFO:")
_STDERR_LOCK = threading.Lock()  # one capture of file descriptor 2 at a time
_capture_fd = None  # the file the captured lines go to, made once

COMPRESSED_FORMATS = ("jpeg", "png")
JPEG_QUALITY = 90
_MAGIC = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}


class ImageError(ValueError):
    """Data that cannot be turned into a frame; ``reason`` is one of REJECT_REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Encoding:
    channels: int
    bytes_per_channel: int
    to_rgb: int | None  # cv2 colour conversion code; None when the channels are already RGB
    from_rgb: int | None = None  # the conversion that writes this encoding from RGB (8-bit ones we publish)


ENCODINGS = {
    "rgb8": Encoding(3, 1, None),
    "bgr8": Encoding(3, 1, cv2.COLOR_BGR2RGB, cv2.COLOR_RGB2BGR),
    "rgba8": Encoding(4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": Encoding(4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": Encoding(1, 1, cv2.COLOR_GRAY2RGB, cv2.COLOR_RGB2GRAY),
    "8UC1": Encoding(1, 1, cv2.COLOR_GRAY2RGB),
    "8UC3": Encoding(3, 1, cv2.COLOR_BGR2RGB),  # OpenCV's own images are BGR
    "rgb16": Encoding(3, 2, None),
    "bgr16": Encoding(3, 2, cv2.COLOR_BGR2RGB),
    "rgba16": Encoding(4, 2, cv2.COLOR_RGBA2RGB),
    "bgra16": Encoding(4, 2, cv2.COLOR_BGRA2RGB),
    "mono16": Encoding(1, 2, cv2.COLOR_GRAY2RGB),
}
SUPPORTED_ENCODINGS = tuple(ENCODINGS)
WRITABLE_ENCODINGS = ("rgb8", "bgr8", "mono8")  # what a camera frame is written as, from RGB


# --------------------------------------------------------------------------- raw images


def raw_to_rgb(image, max_pixels: int = 0) -> np.ndarray:
    """A raw image's fields -> H x W x 3 uint8 RGB; a view of its data when it is unpadded rgb8.

    ``max_pixels`` (0: no limit) rejects larger frames before any conversion work.
    """
    pixels = stored_pixels(image, max_pixels)
    to_rgb = ENCODINGS[image.encoding].to_rgb
    return pixels if to_rgb is None else cv2.cvtColor(pixels, to_rgb)


def raw_to_array(image) -> np.ndarray:
    """The pixels as stored, 8 bits per channel: H x W for one channel (class ids), else H x W x channels."""
    pixels = stored_pixels(image)
    return pixels[..., 0] if pixels.shape[2] == 1 else pixels


def stored_pixels(image, max_pixels: int = 0) -> np.ndarray:
    """H x W x channels uint8 in the image's channel order, without row padding; a view where possible."""
    check_size(image.width, image.height, max_pixels, f"{image.encoding} image")
    height, width, encoding = image.height, image.width, image.encoding
    spec = ENCODINGS.get(encoding)
    if spec is None:
        raise ImageError(
            UNSUPPORTED_ENCODING, f"unsupported encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    row_bytes = width * spec.channels * spec.bytes_per_channel
    if image.step < row_bytes:
        raise ImageError(
            SHORT_DATA, f"step {image.step} is smaller than one {width}-pixel {encoding} row ({row_bytes} B)"
        )
    needed = image.step * height
    data = np.frombuffer(image.data, dtype=np.uint8)
    if data.size < needed:
        raise ImageError(
            SHORT_DATA,
            f"{encoding} image {width}x{height} has {data.size} B of data, shorter than step*height "
            f"= {image.step}*{height} = {needed} B",
        )
    rows = data[:needed].reshape(height, image.step)[:, :row_bytes]
    if spec.bytes_per_channel == 2:
        rows = _to_8bit(rows, big_endian=bool(image.is_bigendian))
    return rows.reshape(height, width, spec.channels)


def from_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """H x W x 3 RGB -> the pixels of ``encoding`` (rgb8, bgr8 or mono8), as cameras publish them."""
    if encoding not in WRITABLE_ENCODINGS:
        raise ValueError(f"frames are written as one of {', '.join(WRITABLE_ENCODINGS)}, not {encoding!r}")
    conversion = ENCODINGS[encoding].from_rgb
    return rgb if conversion is None else cv2.cvtColor(rgb, conversion)


def check_size(width: int, height: int, max_pixels: int = 0, what: str = "image") -> None:
    """Raises ImageError for an empty image, or one with more than ``max_pixels`` pixels.

    ``max_pixels`` 0 (no limit) and values over PIXEL_CEILING mean PIXEL_CEILING.
    """
    if height == 0 or width == 0:
        raise ImageError(ZERO_SIZE, f"zero-sized {what}: {width}x{height}")
    if width * height > pixel_limit(max_pixels):
        if 0 < max_pixels <= PIXEL_CEILING:
            limit = f"max_input_pixels {max_pixels}"
        else:
            asked = "no limit" if max_pixels <= 0 else "more"
            limit = f"the codec's ceiling of {PIXEL_CEILING} (max_input_pixels {max_pixels} asks for {asked})"
        raise ImageError(OVERSIZE, f"{what} {width}x{height} has {width * height} pixels, over {limit}")


def pixel_limit(max_pixels: int = 0) -> int:
    """The pixel limit that applies for a caller's ``max_pixels`` (0: none asked for)."""
    return min(max_pixels, PIXEL_CEILING) if max_pixels > 0 else PIXEL_CEILING


def _to_8bit(rows: np.ndarray, big_endian: bool) -> np.ndarray:
    """16-bit channels (in the message's byte order) -> their high bytes."""
    height = rows.shape[0]
    wide = np.ascontiguousarray(rows).view(">u2" if big_endian else "<u2").reshape(height, -1)
    return (wide >> 8).astype(np.uint8)


# --------------------------------------------------------------------------- compressed images


def compressed_kind(data) -> str | None:
    """jpeg or png from the data's magic bytes (a CompressedImage's format string is free text)."""
    head = bytes(data[:8])
    return next((kind for kind, magic in _MAGIC.items() if head.startswith(magic)), None)


def compressed_to_rgb(data, fmt: str = "", max_pixels: int = 0) -> np.ndarray:
    """JPEG or PNG bytes -> H x W x 3 uint8 RGB; ``fmt`` (the message's format string) only names it in errors.

    The size in the header is checked against ``max_pixels`` (see check_size) before anything is decoded.
    """
    array = np.frombuffer(data, dtype=np.uint8)
    if array.size == 0:
        raise ImageError(ZERO_SIZE, f"compressed image ({fmt or 'no format'}) has no data")
    kind = compressed_kind(array)
    if kind is None:
        raise ImageError(
            UNSUPPORTED_ENCODING,
            f"unsupported compressed format {fmt!r}: the data is not jpeg or png (first bytes {array[:4].tobytes()!r})",
        )
    # IMREAD_COLOR alone turns the pixels by an EXIF orientation tag: labels would not match the camera's frame.
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    return cv2.cvtColor(_decode(array, kind, flags, max_pixels), cv2.COLOR_BGR2RGB)


def compressed_to_labels(data) -> np.ndarray:
    """A lossless single-channel 8-bit PNG (class ids) -> H x W uint8."""
    array = np.frombuffer(data, dtype=np.uint8)
    if compressed_kind(array) != "png":
        raise ImageError(CORRUPT_COMPRESSED, "class ids must be a single-channel 8-bit png")
    labels = _decode(array, "png", cv2.IMREAD_UNCHANGED)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ImageError(CORRUPT_COMPRESSED, "class ids must be a single-channel 8-bit png")
    return labels


def compressed_size(array: np.ndarray, kind: str) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header or a PNG's IHDR, without decoding; ImageError if unreadable."""
    data = memoryview(array)
    return _jpeg_size(data) if kind == "jpeg" else _png_size(data)


def _decode(array: np.ndarray, kind: str, flags: int, max_pixels: int = 0) -> np.ndarray:
    """Header checks first (size, JPEG scan count), then OpenCV; every failure is an ImageError."""
    width, height = compressed_size(array, kind)
    check_size(width, height, max_pixels, kind)
    if kind == "jpeg":
        scans = array.tobytes().count(b"\xff\xda")  # 0xFF is escaped in entropy-coded data: these are all markers
        if scans > MAX_JPEG_SCANS:
            raise ImageError(CORRUPT_COMPRESSED, f"jpeg has {scans} scans, over {MAX_JPEG_SCANS}: refused undecoded")
    printed = []
    try:
        if kind == "png":
            with decoder_output(printed):
                image = cv2.imdecode(array, flags)
        else:
            image = cv2.imdecode(array, flags)
    except cv2.error as error:  # OpenCV's own limits, or memory
        message = f"{kind} {width}x{height} could not be decoded: {_first_line(error)}"
        raise ImageError(CORRUPT_COMPRESSED, message) from None
    if image is None:
        said = f" ({'; '.join(dict.fromkeys(printed))})" if printed else ""
        raise ImageError(CORRUPT_COMPRESSED, f"corrupt {kind}: {array.size} B could not be decoded{said}")
    return image


@contextmanager
def decoder_output(lines: list):
    """Captures what native code writes to stderr (file descriptor 2) inside the block: the decoders' own lines
    are appended to ``lines`` (libpng's prefix dropped), any other line is written on to stderr at the end.
    Where file descriptor 2 cannot be captured (closed, no dup), the block runs uncaptured."""
    with _STDERR_LOCK:
        try:
            capture = _capture_file()
            if sys.stderr is not None:
                sys.stderr.flush()  # Python's buffered lines go out before, not into, the capture
            saved = os.dup(2)
        except (OSError, ValueError):
            yield
            return
        os.dup2(capture, 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            printed = _drain(capture)
    others = []
    for line in printed.decode(errors="replace").splitlines():
        if line.startswith(DECODER_LINE_PREFIXES):
            lines.append(_decoder_line(line))
        elif line.strip():
            others.append(line)
    if others:
        os.write(2, ("\n".join(others) + "\n").encode())


def _decoder_line(line: str) -> str:
    """``libpng error: IDAT: CRC error`` -> ``libpng: IDAT: CRC error``; OpenCV's ``[ WARN:0@0.01] global
    grfmt_png.cpp:793 readFromStreamOrBuffer PNG input buffer is incomplete`` -> ``opencv: PNG input ...``."""
    if line.startswith("libpng "):
        return "libpng: " + line.split(":", 1)[-1].strip()
    words = line.split("] ", 1)[-1].split(maxsplit=3)
    return "opencv: " + (words[3] if len(words) == 4 and words[0] == "global" else " ".join(words))


def _capture_file() -> int:
    global _capture_fd
    if _capture_fd is None:
        if hasattr(os, "memfd_create"):
            _capture_fd = os.memfd_create("road_seg_decoder_stderr", os.MFD_CLOEXEC)
        else:
            handle, path = tempfile.mkstemp(prefix="road_seg_decoder_stderr")
            os.unlink(path)
            _capture_fd = handle
    return _capture_fd


def _drain(fd: int) -> bytes:
    """The capture file's contents; it is left empty for the next capture."""
    size = os.fstat(fd).st_size
    printed = os.pread(fd, size, 0) if size else b""
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    return printed


# JPEG markers: start-of-frame ones hold the size; these stand alone, without a length.
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC
_JPEG_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RST0-7
_JPEG_SCAN, _JPEG_END = 0xDA, 0xD9


def _jpeg_size(data: memoryview) -> tuple[int, int]:
    """Walks the marker segments from SOI to the first start-of-frame; each is skipped by its length."""
    position = 2  # past SOI
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise ImageError(CORRUPT_COMPRESSED, f"corrupt jpeg: no marker at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            position += 2
            continue
        if marker in (_JPEG_SCAN, _JPEG_END):
            break
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in _JPEG_FRAME_MARKERS and length >= 8 and position + 9 <= len(data):
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return width, height
        if length < 2:
            raise ImageError(CORRUPT_COMPRESSED, f"corrupt jpeg: segment length {length} at byte {position}")
        position += 2 + length
    raise ImageError(CORRUPT_COMPRESSED, f"corrupt jpeg: no frame header in its {len(data)} B")


def _png_size(data: memoryview) -> tuple[int, int]:
    """The IHDR chunk must come first, right after the signature: length 13, then width and height."""
    if len(data) < 24 or bytes(data[12:16]) != b"IHDR":
        raise ImageError(CORRUPT_COMPRESSED, f"corrupt png: no IHDR header in its first {min(len(data), 24)} B")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _first_line(error: Exception) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def encode_compressed(pixels: np.ndarray, fmt: str = "jpeg", jpeg_quality: int = JPEG_QUALITY) -> np.ndarray:
    """H x W x 3 RGB, or H x W mono (e.g. labels), -> JPEG or PNG bytes (as a uint8 array), the way
    image_transport's compressed plugin sends them."""
    if fmt not in COMPRESSED_FORMATS:
        raise ValueError(f"compressed format must be one of {', '.join(COMPRESSED_FORMATS)}, got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if fmt == "jpeg" else []
    stored = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", stored, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {pixels.shape} frame as {fmt}")
    return encoded.ravel()


def compressed_format_string(fmt: str, encoding: str = "rgb8") -> str:
    """The format field image_transport's compressed plugin writes for a frame of ``encoding`` (rgb8 or mono8)."""
    return f"{encoding}; {fmt} compressed {'mono8' if encoding == 'mono8' else 'bgr8'}"
