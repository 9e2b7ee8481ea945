"""Training of the visual-token projector (``python -m ros2_infmllm.train``)."""
