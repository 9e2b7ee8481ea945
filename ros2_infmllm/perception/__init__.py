"""The eyes of the product: pretrained perception parts and the backbones they share.

Nothing here knows of ROS, model families or the memory; models/ (the frame describer and
the visual-token adapters) build on it.
"""
