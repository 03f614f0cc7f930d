"""The CamVid 11-class label set: names, display colours, normalisation and the void id.

One place for these facts; checkpoints keep a copy so a model trained on
another label set still colours its own classes correctly.
"""

import numpy as np

CLASS_NAMES = (
    "sky",
    "building",
    "pole",
    "road",
    "sidewalk",
    "tree",
    "sign_symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)

CLASS_COLORS = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)

NUM_CLASSES = len(CLASS_NAMES)
IGNORE_INDEX = 11  # CamVid "void": ignored by every loss and metric.

# Per-channel RGB statistics used to normalise inputs (ImageNet values; the
# networks train from scratch, so these only need to be fixed, not exact).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def color_table(colors=CLASS_COLORS) -> np.ndarray:
    """A 256x3 uint8 lookup table: class id -> RGB, black for ids without a colour."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(colors)] = np.asarray(colors, dtype=np.uint8)
    return table
