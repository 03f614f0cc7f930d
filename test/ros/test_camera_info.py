"""A camera's CameraInfo for its labels: scaled to the label's size, as it is where it gives no size."""

import pytest
from sensor_msgs.msg import CameraInfo, RegionOfInterest
from std_msgs.msg import Header

from road_seg_ros.ros.camera_info import CameraInfos, scaled

K = [400.0, 0.0, 80.0, 0.0, 410.0, 60.0, 0.0, 0.0, 1.0]
P = [400.0, 0.0, 80.0, -20.0, 0.0, 410.0, 60.0, 4.0, 0.0, 0.0, 1.0, 0.0]


def info(width: int, height: int, nanosec: int = 1) -> CameraInfo:
    header = Header(frame_id="camera")
    header.stamp.sec, header.stamp.nanosec = 1_700_000_000, nanosec
    roi = RegionOfInterest(x_offset=20, y_offset=10, width=100, height=80, do_rectify=True)
    return CameraInfo(header=header, width=width, height=height, k=K, p=P, roi=roi)


def test_k_p_and_the_roi_scale_to_the_labels_size_and_the_source_is_left_alone():
    source = info(160, 120)
    out = scaled(source, 60, 80, Header(frame_id="label"))
    assert (out.width, out.height, out.header.frame_id) == (80, 60, "label")
    assert list(out.k) == pytest.approx([200.0, 0.0, 40.0, 0.0, 205.0, 30.0, 0.0, 0.0, 1.0])
    assert list(out.p) == pytest.approx([200.0, 0.0, 40.0, -10.0, 0.0, 205.0, 30.0, 2.0, 0.0, 0.0, 1.0, 0.0])
    assert (out.roi.x_offset, out.roi.y_offset, out.roi.width, out.roi.height, out.roi.do_rectify) == (
        10, 5, 50, 40, True
    )  # fmt: skip
    assert list(source.k) == K and source.roi.width == 100


@pytest.mark.parametrize("size", [(0, 0), (0, 120), (160, 0)])
def test_a_camera_info_without_a_size_is_published_as_it_is(size):
    out = scaled(info(*size), 60, 80, Header())
    assert (out.width, out.height) == (80, 60)
    assert list(out.k) == K and list(out.p) == P and out.roi.width == 100


def test_the_frames_own_stamp_is_preferred_to_the_latest():
    infos = CameraInfos()
    assert infos.for_label(info(80, 60).header, 60, 80) is None
    infos.add(info(160, 120, nanosec=1))
    infos.add(info(80, 60, nanosec=2))
    assert infos.for_label(info(0, 0, nanosec=1).header, 60, 80).k[0] == pytest.approx(200.0)  # its own, scaled
    assert infos.for_label(info(0, 0, nanosec=9).header, 60, 80).k[0] == pytest.approx(400.0)  # the latest
