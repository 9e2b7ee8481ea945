"""ros2_infmllm: a ROS 2 node with a long visual memory in a bounded KV cache."""
