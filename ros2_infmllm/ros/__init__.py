"""The ROS 2 side: the lifecycle node, its launch runner and the ROS message conversions.

Everything model related is reached through :mod:`ros2_infmllm.engine`; nothing below the
engine is imported from here.
"""
