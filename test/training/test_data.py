"""CamVid reading and both augmentations keep images and labels aligned."""

import dataclasses

import numpy as np
import pytest
import torch

from road_seg_ros.core.labels import IGNORE_INDEX
from road_seg_ros.training.augment import Augmentation, DeviceAugmentation, TrainAugmentation, hue_matrix
from road_seg_ros.training.config import TrainConfig
from road_seg_ros.training.data import CamVid, DataError, class_weights, read_split

RARE = (2, 6, 7, 9, 10)


def settings(**changes) -> Augmentation:
    """Augmentation with everything off (scale 1, no jitter) but ``changes``."""
    plain = TrainConfig(scale_range=(1.0, 1.0), jitter=0.0)
    return Augmentation.from_config(dataclasses.replace(plain, **changes))


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
    assert len(read_split(None, "train+val")) == 468
    with pytest.raises(DataError, match="split must be"):
        read_split(None, "trainval")


def test_a_drive_is_held_out_of_a_split_or_kept_alone():
    held_out = read_split(None, "train@0006R0")
    rest = read_split(None, "train+val-0006R0")
    assert len(held_out) == 101 and {s.name.split("_")[0] for s in held_out} == {"0006R0"}
    assert len(rest) == 468 - 101 and not {s.name for s in held_out} & {s.name for s in rest}
    assert {s.name.split("_")[0] for s in rest} == {"0001TP", "0016E5"}
    for spec, words in {
        "train@Seq05VD": "has no frames",
        "val-0006R0": "leaves nothing out",
        "train@": "split must be",
        "train@0006R0@x": "split must be",
        "test-../x": "split must be",
    }.items():
        with pytest.raises(DataError, match=words):
            read_split(None, spec)


@pytest.mark.parametrize("on_device", [False, True])
def test_augmentation_at_scale_one_is_the_frame_or_its_mirror(frames, on_device):
    dataset, images, labels = frames
    if on_device:
        outputs = zip(*DeviceAugmentation(settings())(images, labels))
    else:
        augment = TrainAugmentation(settings(), seed=0)
        outputs = (augment(image, label) for image, label in zip(dataset.images, dataset.labels))
    for image, label, (out_image, out_label) in zip(images, labels, outputs):
        if not torch.equal(out_label, label):
            image, label = image.flip(2), label.flip(1)
        assert torch.equal(out_label, label) and torch.equal(out_image, image)


def test_device_augmentation_pads_with_void_when_shrinking(frames):
    _, images, labels = frames
    out_images, out_labels = DeviceAugmentation(settings(scale_range=(0.5, 0.5), jitter=0.3))(images, labels)
    assert out_images.dtype == torch.uint8 and out_labels.shape == (3, 360, 480)
    # a half-size frame centred in the crop: three quarters padding, all of it void
    assert (out_labels == IGNORE_INDEX).float().mean() > 0.74
    assert out_labels.max() <= IGNORE_INDEX and out_labels.min() >= 0


@pytest.mark.parametrize("on_device", [False, True])
def test_rotation_keeps_labels_on_their_pixels_and_voids_the_corners(frames, on_device):
    """A frame whose colour encodes its label: after a rotated, scaled crop every labelled pixel keeps its colour."""
    dataset, _, _ = frames
    label = dataset.labels[0]
    palette = np.random.default_rng(0).integers(0, 256, (256, 3), np.uint8)
    painted = palette[label]
    chosen = settings(crop_size=(256, 320), scale_range=(0.8, 1.2), rotation_degrees=10.0)
    if on_device:
        images, labels = DeviceAugmentation(chosen, torch.Generator().manual_seed(3))(
            torch.from_numpy(painted.transpose(2, 0, 1).copy())[None], torch.from_numpy(label.astype(np.int64))[None]
        )
        image, out_label = images[0], labels[0]
    else:
        image, out_label = TrainAugmentation(chosen, seed=3)(painted, label)
    image, out_label = image.permute(1, 2, 0).numpy(), out_label.numpy()
    labelled = out_label != IGNORE_INDEX
    # nearest labels against bilinear colours: compare only away from class boundaries
    interior = labelled & (np.abs(image.astype(int) - palette[out_label]).max(axis=2) <= 1)
    assert interior.mean() > 0.6 * labelled.mean()
    assert set(np.unique(out_label)) <= set(np.unique(label)) | {IGNORE_INDEX}


def test_rare_class_crops_are_centred_on_a_rare_pixel(frames):
    dataset, _, _ = frames
    label = dataset.labels[0]
    assert np.isin(label, RARE).any()
    augment = TrainAugmentation(settings(crop_size=(64, 64), rare_crop_probability=1.0), seed=1)
    for _ in range(10):
        _, crop = augment(dataset.images[0], label)
        centre = crop.numpy()[30:34, 30:34]  # the 4 pixels around the centre (a flip may mirror it by one)
        assert np.isin(centre, RARE).any()


def test_photometric_changes_pixels_never_labels(frames):
    dataset, _, _ = frames
    noisy = settings(jitter=0.3, hue_degrees=30.0, gamma_range=(0.7, 1.5), blur_probability=1.0, noise_std=8.0)
    plain_image, plain_label = TrainAugmentation(settings(), seed=5)(dataset.images[1], dataset.labels[1])
    image, label = TrainAugmentation(noisy, seed=5)(dataset.images[1], dataset.labels[1])
    assert torch.equal(label, plain_label)
    assert image.dtype == torch.uint8 and (image.int() - plain_image.int()).abs().float().mean() > 2.0


def test_hue_rotation_keeps_greys_and_turns_full_circle():
    grey = np.full((1, 3), 117.0, np.float32)
    np.testing.assert_allclose(grey @ hue_matrix(40.0).T, grey, atol=1e-3)
    colour = np.array([[200.0, 30.0, 90.0]], np.float32)
    np.testing.assert_allclose(colour @ hue_matrix(360.0).T, colour, atol=1e-3)
    assert np.abs(colour @ hue_matrix(90.0).T - colour).max() > 30


def test_class_weights_favour_rare_classes(frames):
    dataset, _, _ = frames
    weights = class_weights(dataset.labels)
    road, pole = 3, 2
    assert weights[pole] > weights[road]
