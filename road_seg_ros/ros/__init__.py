"""The ROS 2 front end: the node, its image messages, diagnostics and the rclpy plumbing around it."""
