"""CamVid reading and both augmentations keep images and labels aligned."""

import numpy as np
import pytest
import torch

from road_seg_ros.core.labels import IGNORE_INDEX
from road_seg_ros.training.data import (
    CamVid,
    DataError,
    DeviceAugmentation,
    TrainAugmentation,
    class_weights,
    read_split,
)


@pytest.fixture(scope="module")
def frames():
    dataset = CamVid(None, "train", limit=3)
    images = torch.stack([torch.from_numpy(image.transpose(2, 0, 1).copy()) for image in dataset.images])
    labels = torch.stack([torch.from_numpy(label.astype(np.int64)) for label in dataset.labels])
    return dataset, images, labels


def test_split_lists_are_sorted_and_complete():
    samples = {split: read_split(None, split) for split in ("train", "val", "test")}
    assert [len(samples[s]) for s in ("train", "val", "test")] == [367, 101, 233]
    assert [s.name for s in samples["test"]] == sorted(s.name for s in samples["test"])
    with pytest.raises(DataError, match="split must be"):
        read_split(None, "trainval")


def test_device_augmentation_at_scale_one_is_the_frame_or_its_mirror(frames):
    _, images, labels = frames
    out_images, out_labels = DeviceAugmentation((360, 480), (1.0, 1.0), jitter=0.0)(images, labels)
    for image, label, out_image, out_label in zip(images, labels, out_images, out_labels):
        if not torch.equal(out_label, label):
            image, label = image.flip(2), label.flip(1)
        assert torch.equal(out_label, label) and torch.equal(out_image, image)


def test_device_augmentation_pads_with_void_when_shrinking(frames):
    _, images, labels = frames
    out_images, out_labels = DeviceAugmentation((360, 480), (0.5, 0.5), jitter=0.3)(images, labels)
    assert out_images.dtype == torch.uint8 and out_labels.shape == (3, 360, 480)
    # a half-size frame centred in the crop: three quarters padding, all of it void
    assert (out_labels == IGNORE_INDEX).float().mean() > 0.74
    assert out_labels.max() <= IGNORE_INDEX and out_labels.min() >= 0


def test_cpu_augmentation_crops_and_keeps_classes(frames):
    dataset, _, _ = frames
    augment = TrainAugmentation((256, 320), (0.5, 2.0), seed=0)
    image, label = augment(dataset.images[0], dataset.labels[0])
    assert image.shape == (3, 256, 320) and label.shape == (256, 320)
    assert set(label.unique().tolist()) <= set(np.unique(dataset.labels[0]).tolist()) | {IGNORE_INDEX}


def test_class_weights_favour_rare_classes(frames):
    dataset, _, _ = frames
    weights = class_weights(dataset.labels)
    road, pole = 3, 2
    assert weights[pole] > weights[road]
