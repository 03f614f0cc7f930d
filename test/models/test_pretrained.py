"""The ImageNet EfficientNet-Lite weights: every tensor of each pinned file maps onto the encoder written
here, bad files are refused in one line, and the real Lite0 weights recognise a street."""

import pytest
import torch
from conftest import camvid_drive_frames

from road_seg_ros.models import pretrained
from road_seg_ros.models.efficientnet import VARIANTS, EfficientNetLite
from road_seg_ros.models.pretrained import (
    IMAGENET_WEIGHTS,
    PretrainedWeightsError,
    WeightsFile,
    load_imagenet_weights,
    mapped_state,
    read_weights,
    weights_path,
)

STREET_CLASSES = {829, 874, 920}  # ImageNet: streetcar, trolleybus, traffic light


def _published(variant):
    return read_weights(weights_path(variant), IMAGENET_WEIGHTS[variant].sha256)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_tensor_of_the_pinned_file_maps_onto_the_encoder(variant):
    published = _published(variant)
    with_head = EfficientNetLite(variant, classifier=True)
    state = mapped_state(published, with_head)
    assert len(state) == len(published) == len(with_head.state_dict())
    # a segmentation encoder has no ImageNet head: all of its own tensors come from the file, the head's are left
    encoder = EfficientNetLite(variant)
    assert load_imagenet_weights(encoder) == len(encoder.state_dict()) < len(published)
    stem = published["_conv_stem.weight"]
    assert torch.equal(encoder.stem[0].weight, stem)


def test_a_wrong_hash_is_refused_in_one_line():
    path = weights_path("efficientnet_lite0")
    with pytest.raises(PretrainedWeightsError) as error:
        read_weights(path, "0" * 64)
    assert "sha256" in _one_line(error) and str(path) in str(error.value)


def test_an_unmapped_or_misshapen_tensor_is_named_in_one_line():
    published = _published("efficientnet_lite0")
    encoder = EfficientNetLite("efficientnet_lite0")
    with pytest.raises(PretrainedWeightsError) as error:
        mapped_state({**published, "_mystery.weight": torch.zeros(1)}, encoder)
    assert "_mystery.weight" in _one_line(error)
    with pytest.raises(PretrainedWeightsError) as error:
        mapped_state(published, EfficientNetLite("efficientnet_lite2"))
    assert "shape" in _one_line(error)
    missing = dict(published)
    del missing["_blocks.3._depthwise_conv.weight"]
    with pytest.raises(PretrainedWeightsError) as error:
        mapped_state(missing, encoder)
    assert "blocks.3.depthwise.0.weight" in _one_line(error)


def test_a_missing_package_names_the_requirement(monkeypatch):
    absent = WeightsFile("road_seg_ros_no_such_weights", "0.1.0", "x.pth", "0" * 64)
    monkeypatch.setitem(pretrained.IMAGENET_WEIGHTS, "efficientnet_lite0", absent)
    with pytest.raises(PretrainedWeightsError) as error:
        load_imagenet_weights(EfficientNetLite("efficientnet_lite0"))
    assert "road-seg-ros-no-such-weights==0.1.0" in _one_line(error)


def test_the_imagenet_classifier_sees_a_street_in_a_camvid_frame():
    (rgb, _), *_ = camvid_drive_frames("0001TP", 1)
    encoder = EfficientNetLite("efficientnet_lite0", classifier=True).eval()
    load_imagenet_weights(encoder)
    frame = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        top5 = set(encoder.classify((frame - 0.5) / 0.5).topk(5).indices[0].tolist())
    assert top5 & STREET_CLASSES


@pytest.mark.parametrize("output_stride, size", [(32, (3, 12, 15)), (16, (3, 23, 30)), (8, (3, 45, 60))])
def test_features_come_at_strides_4_to_32_or_dilated(output_stride, size):
    encoder = EfficientNetLite("efficientnet_lite0", output_stride=output_stride).eval()
    with torch.no_grad():
        features = encoder(torch.zeros(1, 3, 360, 480))
    assert [f.shape[1] for f in features] == encoder.channels == [24, 40, 112, 320]
    assert tuple(features[0].shape[-2:]) == (90, 120)
    assert (3, *features[-1].shape[-2:]) == size
