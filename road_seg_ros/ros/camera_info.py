"""Each camera's sensor_msgs/CameraInfo, republished with its labels so that ``~/label`` and ``~/camera_info``
make a camera pair (image_transport's camera subscribers, RViz's Camera display, projection nodes).

The CameraInfo for a label is the one whose stamp equals the frame's when it has arrived, else the latest; a
CameraInfo that describes another size than the label's has K and P scaled to it. No camera_info publisher:
nothing is republished.
"""

from collections import OrderedDict

from sensor_msgs.msg import CameraInfo, RegionOfInterest

from ..core.frames import stamp_ns

KEPT = 32  # recent CameraInfos by stamp: a frame waits for inference at most a few frame periods


class CameraInfos:
    """A camera's recent CameraInfos, by stamp."""

    def __init__(self):
        self._by_stamp = OrderedDict()
        self._latest = None

    def add(self, msg: CameraInfo) -> None:
        self._latest = msg
        self._by_stamp[stamp_ns(msg.header)] = msg
        while len(self._by_stamp) > KEPT:
            self._by_stamp.popitem(last=False)

    def for_label(self, header, height: int, width: int) -> CameraInfo | None:
        """The CameraInfo to publish with a label of ``height`` x ``width`` under ``header``; None before any."""
        found = self._by_stamp.get(stamp_ns(header), self._latest)
        if found is None:
            return None
        return scaled(found, height, width, header)


def scaled(info: CameraInfo, height: int, width: int, header) -> CameraInfo:
    """``info`` for an image of ``height`` x ``width`` (K, P and the ROI scaled where its size differs; as it is
    where it gives no size), under ``header``."""
    sx, sy = (width / info.width, height / info.height) if info.width and info.height else (1.0, 1.0)
    k, p = [float(value) for value in info.k], [float(value) for value in info.p]
    for index in (0, 2):  # fx, cx
        k[index] *= sx
    for index in (4, 5):  # fy, cy
        k[index] *= sy
    for index in (0, 2, 3):  # fx', cx', Tx * fx'
        p[index] *= sx
    for index in (5, 6, 7):  # fy', cy', Ty * fy'
        p[index] *= sy
    roi = info.roi
    return CameraInfo(
        header=header,
        height=height,
        width=width,
        distortion_model=info.distortion_model,
        d=info.d,
        k=k,
        r=info.r,
        p=p,
        binning_x=info.binning_x,
        binning_y=info.binning_y,
        roi=RegionOfInterest(
            x_offset=round(roi.x_offset * sx),
            y_offset=round(roi.y_offset * sy),
            height=round(roi.height * sy),
            width=round(roi.width * sx),
            do_rectify=roi.do_rectify,
        ),
    )
