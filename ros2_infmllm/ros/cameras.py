"""The node's cameras on the ROS side: topic state, subscription and events, frame decode.

Per topic: what DDS tells (arrival, matched publishers, lost samples, incompatible QoS)
and the subscription with its event callbacks; and the decode the runner calls for a
frame it feeds.

ROS only. The runner (engine) paces and counts what is fed.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Optional

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_policy_name_from_kind
from sensor_msgs.msg import CompressedImage, Image

from ..engine.runner import DroppedFrame
from . import arrival
from .imaging import FrameError, compressed_to_rgb, image_to_rgb


class CameraState:
    """One camera topic on the ROS side: subscription, arrival, last stamp (the runner feeds)."""

    def __init__(self, topic: str, stall_s: float) -> None:
        """Start unsubscribed with nothing received."""
        self.topic = topic
        self.monitor = arrival.ArrivalMonitor(topic, stall_s)
        self.problem: Optional[arrival.Problem] = None
        self.received = 0
        self.last_stamp: Optional[float] = None
        self.subscription = None


def subscribe_camera(node: Node, cam: CameraState, qos: QoSProfile,
                     on_frame: Callable[[CameraState, Any, bool], None], lock: threading.RLock,
                     warn: Callable[[str, str], None]) -> Any:
    """Subscribe one camera with ``qos`` and the DDS events the arrival check needs.

    Called with ``lock`` held (the node's), so no event of the new subscription is handled
    before its monitor is reset; ``warn(key, text)`` logs rate-limited.
    """
    compressed = cam.topic.endswith('/compressed')
    cam.problem = None

    def on_matched(info: Any) -> None:
        with lock:
            cam.monitor.set_matched(info.current_count, time.monotonic())

    def on_lost(info: Any) -> None:
        with lock:
            cam.monitor.set_lost(info.total_count)

    def on_incompatible(info: Any) -> None:
        policy = qos_policy_name_from_kind(info.last_policy_kind).lower()
        with lock:
            cam.monitor.set_incompatible(info.total_count, policy)
        warn(f'{cam.topic}:incompatible', (
            f'{cam.topic}: a publisher offers QoS incompatible with this subscription '
            f'({policy}; camera_qos.reliability={qos.reliability.name.lower()}): '
            'none of its frames will arrive'))

    def subscribe(callbacks: Dict[str, Callable[[Any], None]]) -> Any:
        return node.create_subscription(
            CompressedImage if compressed else Image, cam.topic,
            lambda msg: on_frame(cam, msg, compressed), qos,
            # one exclusive group per camera keeps its frames (and events) in order
            callback_group=MutuallyExclusiveCallbackGroup(),
            event_callbacks=SubscriptionEventCallbacks(**callbacks))

    try:
        subscription = subscribe({'incompatible_qos': on_incompatible,
                                  'message_lost': on_lost, 'matched': on_matched})
        cam.monitor.resubscribed(matched_events=True)
    except UnsupportedEventTypeError:
        # an RMW without these events: a loss then shows as silence (graph count)
        warn('events', f'{cam.topic}: the RMW has no sample-lost or matched events; frames '
             'lost in transport show only as silence')
        subscription = subscribe({'incompatible_qos': on_incompatible})
        cam.monitor.resubscribed(matched_events=False)
    return subscription


def decode_frame(frame: tuple, max_side: int) -> Any:
    """(message, compressed) -> RGB array downscaled to ``max_side`` (the runner's decode).

    Raises DroppedFrame with the decoder's reason for a bad frame.
    """
    msg, compressed = frame
    try:
        if compressed:
            return compressed_to_rgb(msg.format, msg.data, max_side=max_side)
        return image_to_rgb(msg.encoding, msg.width, msg.height, msg.step, msg.data,
                            is_bigendian=bool(msg.is_bigendian), max_side=max_side)
    except FrameError as exc:
        raise DroppedFrame(exc.reason, str(exc)) from exc
