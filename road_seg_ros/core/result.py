"""What the engine returns for one frame."""

from dataclasses import dataclass, field

import numpy as np

STAGES = ("preprocess", "inference", "postprocess", "total")


@dataclass
class Segmentation:
    labels: np.ndarray  # H x W uint8 class ids, at the input's size
    timings_ms: dict = field(default_factory=dict)  # STAGES, in milliseconds
    color: np.ndarray | None = None  # H x W x 3 RGB class colours, when asked for
    overlay: np.ndarray | None = None  # H x W x 3 RGB colours blended over the frame, when asked for
