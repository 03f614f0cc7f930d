"""road_seg_ros: real-time road-scene semantic segmentation for ROS 2."""
