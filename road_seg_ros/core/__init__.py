"""The segmentation engine and what it needs: checkpoints, backends, options, the image codec. No ROS here."""
