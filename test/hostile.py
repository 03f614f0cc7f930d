"""The hostile-input corpus, generated (nothing big is stored): decompression bombs, damaged compressed data,
inconsistent raw images and checkpoints whose metadata lies.

The bombs are what a careful attacker sends: a few hundred bytes whose header claims a huge frame. Decoded
blindly, the 30000x30000 JPEG costs OpenCV 6 GB and seconds; the 20000x20000 PNG holds real (all-zero) pixel
data for the whole frame in 49 KB.
"""

import struct
import zlib

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SOF_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int, height: int, full_data: bool = False) -> bytes:
    """A 1-bit greyscale PNG header claiming ``width`` x ``height``; ``full_data`` compresses every (zero) row
    into its IDAT, so the file is complete and valid (49 KB for 20000x20000), else a token IDAT (68 bytes in all)."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    if full_data:
        compressor = zlib.compressobj(9)
        row = bytes(1 + (width + 7) // 8)  # filter byte, then the packed bits
        rows = b"".join(compressor.compress(row * 1000) for _ in range(height // 1000))
        data = rows + compressor.compress(row * (height % 1000)) + compressor.flush()
    else:
        data = zlib.compress(bytes(16))
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def jpeg_bomb(width: int, height: int) -> bytes:
    """A real 16x16 JPEG (under 1 KB) whose frame header is rewritten to claim ``width`` x ``height``."""
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)
    data = bytearray(cv2.imencode(".jpg", pixels)[1].tobytes())
    position = 2
    while data[position + 1] not in SOF_MARKERS:
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    data[position + 5 : position + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def jpeg_with_many_scans(scans: int) -> bytes:
    """A small JPEG followed by ``scans`` empty scan headers: the shape of a progressive-JPEG CPU bomb."""
    good = jpeg_bomb(16, 16)
    empty_scan = b"\xff\xda" + struct.pack(">H", 8) + bytes([1, 1, 0, 0, 0, 0])
    return good[:-2] + empty_scan * scans + b"\xff\xd9"


BOMBS = {  # name: (bytes, the size the header claims)
    "png_65535x65535": (lambda: png_bomb(65535, 65535), (65535, 65535)),
    "jpeg_65535x65535": (lambda: jpeg_bomb(65535, 65535), (65535, 65535)),
    "jpeg_30000x30000": (lambda: jpeg_bomb(30000, 30000), (30000, 30000)),
    "png_20000x20000_complete": (lambda: png_bomb(20000, 20000, full_data=True), (20000, 20000)),
}


def damaged_compressed() -> dict[str, tuple[bytes, str]]:
    """name: (data, the codec's rejection reason) for truncated, garbage and header-less compressed frames."""
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)
    jpeg, png = (cv2.imencode(ext, pixels)[1].tobytes() for ext in (".jpg", ".png"))
    return {
        "jpeg_truncated_in_header": (jpeg[:40], "corrupt_compressed"),
        "jpeg_truncated_in_scan": (jpeg[: len(jpeg) // 2], "corrupt_compressed"),
        "jpeg_garbage_after_magic": (jpeg[:4] + bytes(range(256)) * 4, "corrupt_compressed"),
        "jpeg_zero_segment_length": (jpeg[:2] + b"\xff\xe0\x00\x00" + jpeg[2:], "corrupt_compressed"),
        "jpeg_scan_before_frame_header": (b"\xff\xd8\xff\xda\x00\x08" + bytes(100), "corrupt_compressed"),
        "jpeg_many_scans": (jpeg_with_many_scans(5000), "corrupt_compressed"),
        "png_truncated": (png[: len(png) // 2], "corrupt_compressed"),
        "png_signature_only": (PNG_SIGNATURE, "corrupt_compressed"),
        "png_without_ihdr": (PNG_SIGNATURE + _chunk(b"IDAT", zlib.compress(bytes(10))), "corrupt_compressed"),
        "png_zero_width": (png_bomb(0, 10), "zero_size"),
        "png_bad_crc": (png[:30] + bytes([png[30] ^ 0xFF]) + png[31:], "corrupt_compressed"),
        "random_bytes": (np.random.default_rng(2).integers(0, 256, 4096, np.uint8).tobytes(), "unsupported_encoding"),
        "empty": (b"", "zero_size"),
    }


def compressed_message(data: bytes, fmt: str = "png") -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = data
    return msg


def inconsistent_raw() -> dict[str, tuple[Image, str]]:
    """name: (Image, the rejection reason) for raw images whose fields disagree with each other or the data."""
    small = bytes(30 * 40 * 3)
    unsupported = "unsupported_encoding"
    return {
        "huge_size_no_data": (Image(width=65535, height=65535, encoding="rgb8", step=65535 * 3), "oversize"),
        "huge_size_short_data": (Image(width=4000, height=2000, encoding="rgb8", step=12000, data=small), "short_data"),
        "step_below_row": (Image(width=40, height=30, encoding="rgb8", step=100, data=small), "short_data"),
        "step_huge": (Image(width=40, height=30, encoding="rgb8", step=2**32 - 1, data=small), "short_data"),
        "sixteen_bit_short": (Image(width=40, height=30, encoding="rgb16", step=240, data=small), "short_data"),
        "zero_height": (Image(width=40, height=0, encoding="rgb8", step=120, data=small), "zero_size"),
        "unknown_encoding": (Image(width=40, height=30, encoding="rgb8 ", step=120, data=small), unsupported),
        "empty_encoding": (Image(width=40, height=30, encoding="", step=120, data=small), unsupported),
    }


# --------------------------------------------------------------------------- checkpoints


def hostile_checkpoints() -> dict[str, tuple[object, str]]:
    """name: (metadata changes, words the one-line error must hold).

    Changes are applied to a tiny student's real metadata: a dict updates its fields, a dict under "arch"
    its architecture, a string replaces the whole JSON text; "weights" changes a tensor instead.
    """
    nan = float("nan")
    return {
        "json_string": ('"just a string"', "metadata must be a JSON object, got str"),
        "json_list": ("[1, 2, 3]", "metadata must be a JSON object, got list"),
        "not_json": ("{'arch': 1", "metadata is not valid JSON"),
        "nested_deep": ("[" * 100_000 + "]" * 100_000, "metadata is not valid JSON"),
        "no_version": ({"format_version": None}, "unsupported checkpoint format version None"),
        "unknown_field": ({"backdoor": 1}, "unknown metadata field(s): ['backdoor']"),
        "arch_string": ({"arch": "student"}, "metadata field 'arch' must be an object"),
        "arch_unknown_name": ({"arch": {"name": "unet"}}, "architecture name must be one of 'student', 'lite_student'"),
        "num_classes_huge": ({"arch": {"num_classes": 10**9}}, "'num_classes' must be an integer in [1, 255]"),
        "num_classes_negative": ({"arch": {"num_classes": -1}}, "'num_classes' must be an integer in [1, 255]"),
        "num_classes_float": ({"arch": {"num_classes": 11.5}}, "'num_classes' must be an integer in [1, 255]"),
        "dilations_100k": ({"arch": {"stage3_dilations": [2] * 100_000}}, "'stage3_dilations' must be a list of 1"),
        "dilation_huge": ({"arch": {"pyramid_dilations": [2, 4, 10**6]}}, "must be an integer in [1, 64]"),
        "channels_huge": ({"arch": {"stage3_channels": 10**6}}, "'stage3_channels' must be an integer in [2, 1024]"),
        "arch_unknown_field": ({"arch": {"layers": 10**9}}, "unknown student field(s): ['layers']"),
        "input_size_huge": ({"input_size": [10**6, 10**6]}, "'input_size'[0] must be an integer in [16, 4096]"),
        "input_size_one_side": ({"input_size": [360]}, "'input_size' must be a list of 2"),
        "colors_out_of_range": ({"class_colors": [[300, 0, 0]] * 11}, "'class_colors'[0] must be [r, g, b]"),
        "colors_too_few": ({"class_colors": [[0, 0, 0]] * 3}, "'class_colors' must be a list of 11 (one per class)"),
        "colors_strings": ({"class_colors": ["red"] * 11}, "'class_colors'[0] must be [r, g, b]"),
        "names_too_few": ({"class_names": ["road"]}, "'class_names' must be a list of 11 (one per class)"),
        "names_not_text": ({"class_names": [1] * 11}, "'class_names'[0] must be a name"),
        "std_zero": ({"std": [0, 0, 0]}, "'std'[0] must be a positive finite number"),
        "mean_nan": ({"mean": [nan, 0.5, 0.5]}, "'mean'[0] must be a finite number"),
        "mean_two": ({"mean": [0.5, 0.5]}, "'mean' must be a list of 3"),
        "description_object": ({"description": {"a": 1}}, "'description' must be text"),
        "training_list": ({"training": [1]}, "'training' must be an object"),
        "weights_nan": ({"weights": ("classifier.weight", nan)}, "weight classifier.weight holds NaN or infinite"),
        "weights_inf": ({"weights": ("stem.0.weight", float("inf"))}, "weight stem.0.weight holds NaN or infinite"),
        "variance_negative": ({"weights": ("stem.1.running_var", -1.0)}, "stem.1.running_var holds negative"),
        "weight_shape": ({"weights": ("classifier.bias", "reshape")}, "weight classifier.bias has shape (12,)"),
    }


def write_hostile_checkpoint(path, change, model_state: dict, metadata: dict):
    """A safetensors file with ``model_state`` and ``metadata`` changed as ``change`` says (see above)."""
    import json

    import torch
    from safetensors.torch import save_file

    state = {name: tensor.clone() for name, tensor in model_state.items()}
    if isinstance(change, str):
        text = change
    else:
        values = json.loads(json.dumps(metadata))
        change = dict(change)
        if "weights" in change:
            name, value = change.pop("weights")
            state[name] = torch.zeros(state[name].numel() + 1) if value == "reshape" else state[name].fill_(value)
        if isinstance(change.get("arch"), dict):
            values["arch"].update(change.pop("arch"))
        values.update(change)
        text = json.dumps({key: value for key, value in values.items() if value is not None})
    save_file(state, str(path), metadata={"road_seg": text})
    return path
