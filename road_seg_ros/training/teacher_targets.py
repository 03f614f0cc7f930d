"""A teacher's logits on every training frame, computed once and warped with each crop.

Online distillation runs the teacher on every augmented batch: on a CPU that costs more than the student's
own step. Cached targets run it once per frame (and its mirror), on the whole frame, and the augmentation
warps those logits with the crop. The crops must then stay inside the frame (no rotation, no scale below
crop / frame), or their borders would have no teacher logits.
"""

import hashlib
from pathlib import Path

import numpy as np
import torch

from ..core.files import written_whole
from ..core.preprocess import Normalize
from .data import CamVid

CACHE = Path.home() / ".cache" / "road_seg_ros" / "teacher_logits"


def check_crops_inside(config, frame_size) -> None:
    """ValueError in one line unless every crop of ``config`` lies inside a frame of ``frame_size``."""
    low = max(config.crop_size[0] / frame_size[0], config.crop_size[1] / frame_size[1])
    if config.rotation_degrees or config.scale_range[0] < low:
        raise ValueError(
            f"teacher_targets: cached needs crops inside the frame: rotation_degrees 0 and scale_range from at "
            f"least {low:.3f} (crop {list(config.crop_size)} of {list(frame_size)} frames), got "
            f"{config.rotation_degrees} and {list(config.scale_range)}"
        )


@torch.no_grad()
def frame_logits(teacher, normalize: Normalize, image: np.ndarray, flip: bool, device) -> np.ndarray:
    """The teacher's H x W x C float16 logits on one uint8 frame (with its mirror averaged in, with ``flip``)."""
    batch = normalize(torch.from_numpy(image.transpose(2, 0, 1).copy())[None].to(device))
    logits = teacher(batch)["out"].float()
    if flip:
        logits = 0.5 * (logits + teacher(batch.flip(3))["out"].float().flip(3))
    return logits[0].permute(1, 2, 0).half().cpu().numpy()


def cache_path(teacher_file: Path, dataset: CamVid, flip: bool) -> Path:
    """Named by the teacher file's content, the frames' names and the flip: a changed input is a new file."""
    digest = hashlib.sha256(Path(teacher_file).read_bytes())
    digest.update(("\n".join(sample.name for sample in dataset.samples) + f"\nflip={flip}").encode())
    return CACHE / f"{digest.hexdigest()[:20]}.npy"


def cached_teacher_logits(teacher, teacher_file: Path, dataset: CamVid, normalize, flip: bool, device) -> list:
    """Per frame H x W x C float16 logits, read from the cache or computed and written there."""
    path = cache_path(teacher_file, dataset, flip)
    if path.is_file():
        stacked = np.load(path, mmap_mode="r")
        if stacked.shape[0] == len(dataset):
            return list(stacked)
    logits = [frame_logits(teacher, normalize, image, flip, device) for image in dataset.images]
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path, suffix=".npy") as temporary:
        np.save(temporary, np.stack(logits))
    return logits
