"""int8 models for OpenVINO: NNCF post-training quantization, calibrated on CamVid train frames.

Only the train split calibrates (never val or test, which measure the
model). The frames go through the engine's own preprocessing (resize to the
input size, normalisation), so the ranges NNCF records are the ones the node
sees. NNCF is needed here only; the engine runs the saved model with
OpenVINO alone.
"""

import numpy as np

from ..core.checkpoint import ModelInfo
from ..core.preprocess import normalisation, resize_frame
from .data import load_rgb, read_split

CALIBRATION_SPLIT = "train"
CALIBRATION_FRAMES = 300


def calibration_frames(data_root, input_size, count: int) -> list[np.ndarray]:
    """``count`` uint8 frames of CamVid's train split at ``input_size``, evenly spread over it (all its drives)."""
    samples = read_split(data_root, CALIBRATION_SPLIT)
    picks = np.linspace(0, len(samples) - 1, num=min(count, len(samples))).round().astype(int)
    return [resize_frame(load_rgb(samples[index].image), input_size) for index in picks]


def quantize(model, info: ModelInfo, frames):
    """An NNCF int8 copy of ``model`` (an OpenVINO model of a ``LabelsNet`` export) calibrated on ``frames``."""
    import nncf

    scale, offset = normalisation(info.mean, info.std)
    batches = [(frame * scale + offset).transpose(2, 0, 1)[np.newaxis].astype(np.float32) for frame in frames]
    return nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches))
