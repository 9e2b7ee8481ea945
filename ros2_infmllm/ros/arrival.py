"""ROS-free bookkeeping that makes a camera whose frames do not arrive visible.

A camera driver and the node can be matched over DDS while the frames never reach the
subscription: best-effort samples larger than the publisher's transport can carry are
lost on the way (Fast DDS's default 512 kB shared-memory segment), and a subscription
whose QoS the publisher cannot serve is never matched at all. Neither raises an error
anywhere, so the node would look healthy while it sees nothing. The node feeds one
:class:`ArrivalMonitor` per camera topic with what DDS tells it (matched publishers,
sample-lost and incompatible-QoS counts, publishers on the graph) and with every frame its
callback receives; :meth:`ArrivalMonitor.check` says, once a second, whether and why the
frames are not arriving. The cause and the fix are in the text, for the log and
/diagnostics.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Deque, Optional, Tuple

#: Seconds over which arrival rate and loss share are measured.
WINDOW_S = 5.0
#: A window in which fewer than this share of the sent frames arrived is a loss.
MIN_ARRIVAL_SHARE = 0.9

#: What to do about frames lost in transport (the text names this file and parameter).
TRANSPORT_FIX = ('give the camera driver (and the node) the shipped Fast DDS profile: '
                 'FASTDDS_DEFAULT_PROFILES_FILE=<ros2_infmllm share>/config/'
                 'fastdds_large_frames.xml (shared memory with room for raw frames), or '
                 'publish reliable and set camera_qos.reliability:=reliable; see docs/node.md')

#: Problem codes, in the order check() looks for them.
CODES = ('qos_incompatible', 'frames_lost', 'no_frames')


@dataclass(frozen=True)
class Problem:
    """Why a camera's frames do not arrive: a short ``code`` and a sentence with the fix."""

    code: str
    text: str


class ArrivalMonitor:
    """Per camera topic: publishers matched against frames received, lost and refused.

    Parameters
    ----------
    topic : str
        Camera topic (for the texts).
    stall_s : float
        A matched publisher from which no frame arrived for this long is reported.
    window_s : float
        Seconds over which the arrival rate and the share of lost frames are measured.
    """

    def __init__(self, topic: str, stall_s: float, window_s: float = WINDOW_S) -> None:
        """Start with nothing matched, received or lost."""
        self.topic = topic
        self.stall_s = float(stall_s)
        self.window_s = float(window_s)
        self.matched: Optional[int] = None   # None: the RMW reported no matched event yet
        self.publishers = 0                  # publishers on the graph, compatible or not
        self.received = 0
        self.lost = 0
        self.incompatible = 0
        self.incompatible_policy = ''
        self.last_arrival: Optional[float] = None
        self._matched_at: Optional[float] = None
        self._samples: Deque[Tuple[float, int, int]] = collections.deque()

    # ---- what DDS and the callback report ----------------------------------------------
    def frame(self, now: float) -> None:
        """Count a frame that reached the subscription callback."""
        self.received += 1
        self.last_arrival = now

    def set_matched(self, count: int, now: float) -> None:
        """Take the matched event: ``count`` publishers are matched now."""
        if count > 0 and not self.matched:
            self._matched_at = now
        self.matched = int(count)

    def set_lost(self, total: int) -> None:
        """Take the sample-lost event: ``total`` samples lost on this subscription so far."""
        self.lost = max(self.lost, int(total))

    def set_incompatible(self, total: int, policy: str) -> None:
        """Take the incompatible-QoS event: ``total`` offers refused, last ``policy``."""
        self.incompatible = max(self.incompatible, int(total))
        self.incompatible_policy = policy

    def resubscribed(self, matched_events: bool) -> None:
        """Forget the DDS counts: a new subscription starts its counters from zero.

        ``matched_events``: the RMW reports matched events (else the graph's count is used).
        """
        self.matched, self._matched_at = (0 if matched_events else None), None
        self.lost = self.incompatible = 0
        self.incompatible_policy = ''
        self._samples.clear()

    # ---- what it means -----------------------------------------------------------------
    def matched_publishers(self) -> int:
        """Return the matched publishers (the graph's count without a matched event)."""
        return self.publishers if self.matched is None else self.matched

    def _window(self, now: float) -> Tuple[float, int, int]:
        """(seconds, frames received, frames lost) over the window up to ``now``."""
        if not self._samples:
            return 0.0, 0, 0
        t0, received0, lost0 = self._samples[0]
        return now - t0, self.received - received0, self.lost - lost0

    def arrival_rate(self, now: float) -> float:
        """Frames per second that reached the callback over the window (0 before a window)."""
        span, received, _ = self._window(now)
        return received / span if span > 0 else 0.0

    def sent_rate(self, now: float) -> float:
        """Frames per second the publishers sent as far as DDS knows (arrived + lost)."""
        span, received, lost = self._window(now)
        return (received + lost) / span if span > 0 else 0.0

    def check(self, now: float, publishers: int) -> Optional[Problem]:
        """Record a sample (call about once a second); the problem now, or None.

        ``publishers`` is the number of publishers the graph lists on the topic.
        """
        self.publishers = int(publishers)
        if self.matched is None and self.publishers > 0 and self._matched_at is None:
            self._matched_at = now
        self._samples.append((now, self.received, self.lost))
        while len(self._samples) > 1 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        matched = self.matched_publishers()
        if self.incompatible and self.publishers > matched:
            return Problem('qos_incompatible', (
                f'{self.topic}: {self.publishers - matched} publisher(s) offer QoS this '
                f'subscription cannot match ({self.incompatible_policy or "QoS"} '
                f'incompatible, {self.incompatible} refused); no frame of theirs arrives. '
                'Fix: camera_qos.reliability:=best_effort matches every publisher, or make '
                'the driver offer what camera_qos asks for'))
        span, received, lost = self._window(now)
        if lost > 0 and received < MIN_ARRIVAL_SHARE * (received + lost):
            return Problem('frames_lost', (
                f'{self.topic}: only {received} of {received + lost} frames arrived in the '
                f'last {span:.0f} s, {lost} lost in transport (DDS sample-lost events; '
                f'likely frames too large for the publisher\'s transport). Fix: '
                f'{TRANSPORT_FIX}'))
        if matched > 0:
            times = [t for t in (self._matched_at, self.last_arrival) if t is not None]
            silent = now - (max(times) if times else now)
            if silent >= self.stall_s:
                fresh = self.last_arrival is None or (
                    self._matched_at is not None and self._matched_at > self.last_arrival)
                heard = ('no frame has arrived since it matched' if fresh
                         else f'the last frame arrived {silent:.0f} s ago')
                return Problem('no_frames', (
                    f'{self.topic}: {matched} publisher(s) matched but {heard} '
                    f'({silent:.0f} s >= camera_stall_s {self.stall_s:g} s). Either the '
                    'driver publishes nothing, or its frames are lost in transport. Fix for '
                    f'the latter: {TRANSPORT_FIX}'))
        return None
