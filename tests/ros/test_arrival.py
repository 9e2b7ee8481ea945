"""ArrivalMonitor (issue 23): a camera whose frames do not arrive is reported, with why."""

from __future__ import annotations

from ros2_infmllm.ros.arrival import CODES, TRANSPORT_FIX, ArrivalMonitor

TOPIC = '/cam/image_raw'


def _tick(mon: ArrivalMonitor, t0: float, seconds: int, publishers: int = 1,
          frames_per_s: int = 0, lost_per_s: int = 0):
    """Advance one second at a time from t0; the problem of the last check."""
    problem = None
    for s in range(1, seconds + 1):
        for k in range(frames_per_s):
            mon.frame(t0 + s - 1 + k / max(1, frames_per_s))
        if lost_per_s:
            mon.set_lost(mon.lost + lost_per_s)
        problem = mon.check(t0 + s, publishers)
    return problem


def test_frames_arriving_as_sent_is_no_problem():
    mon = ArrivalMonitor(TOPIC, stall_s=3.0)
    mon.set_matched(1, 0.0)
    assert _tick(mon, 0.0, 8, frames_per_s=30) is None
    assert 29.0 <= mon.arrival_rate(8.0) <= 31.0
    assert mon.sent_rate(8.0) == mon.arrival_rate(8.0)


def test_matched_publisher_without_frames_is_reported_after_stall_s():
    mon = ArrivalMonitor(TOPIC, stall_s=3.0)
    mon.set_matched(1, 0.0)
    assert _tick(mon, 0.0, 2) is None
    problem = _tick(mon, 2.0, 1)
    assert problem is not None and problem.code == 'no_frames'
    assert TOPIC in problem.text and TRANSPORT_FIX in problem.text
    assert 'no frame has arrived since it matched' in problem.text


def test_frames_that_stop_are_reported_as_stopped():
    mon = ArrivalMonitor(TOPIC, stall_s=3.0)
    mon.set_matched(1, 0.0)
    assert _tick(mon, 0.0, 3, frames_per_s=10) is None
    problem = _tick(mon, 3.0, 4)
    assert problem.code == 'no_frames' and 'the last frame arrived' in problem.text


def test_no_publisher_is_no_problem():
    mon = ArrivalMonitor(TOPIC, stall_s=1.0)
    assert _tick(mon, 0.0, 10, publishers=0) is None


def test_sample_lost_events_are_frames_lost_with_the_fix():
    mon = ArrivalMonitor(TOPIC, stall_s=3.0)
    mon.set_matched(1, 0.0)
    problem = _tick(mon, 0.0, 2, frames_per_s=3, lost_per_s=27)
    assert problem is not None and problem.code == 'frames_lost'
    assert 'only 3 of 30 frames arrived' in problem.text and TRANSPORT_FIX in problem.text
    assert 29.0 <= mon.sent_rate(2.0) <= 31.0 and mon.arrival_rate(2.0) < 4.0


def test_a_few_lost_frames_are_tolerated():
    mon = ArrivalMonitor(TOPIC, stall_s=3.0)
    mon.set_matched(1, 0.0)
    assert _tick(mon, 0.0, 6, frames_per_s=29, lost_per_s=1) is None


def test_loss_leaves_the_window():
    mon = ArrivalMonitor(TOPIC, stall_s=3.0, window_s=5.0)
    mon.set_matched(1, 0.0)
    assert _tick(mon, 0.0, 2, frames_per_s=1, lost_per_s=20).code == 'frames_lost'
    assert _tick(mon, 2.0, 7, frames_per_s=30) is None


def test_incompatible_publisher_is_reported_before_anything_else():
    mon = ArrivalMonitor(TOPIC, stall_s=3.0)
    mon.resubscribed(matched_events=True)
    mon.set_incompatible(1, 'reliability')
    problem = _tick(mon, 0.0, 1, publishers=1)
    assert problem.code == 'qos_incompatible'
    assert 'reliability' in problem.text and 'camera_qos.reliability:=best_effort' in problem.text
    mon.set_matched(1, 1.0)          # the publisher now matches (QoS changed): fine again
    assert _tick(mon, 1.0, 2, frames_per_s=30) is None


def test_without_matched_events_the_graph_count_is_used():
    mon = ArrivalMonitor(TOPIC, stall_s=2.0)
    assert _tick(mon, 0.0, 1) is None
    assert mon.matched_publishers() == 1
    assert _tick(mon, 1.0, 2).code == 'no_frames'


def test_resubscribing_starts_the_dds_counts_again():
    mon = ArrivalMonitor(TOPIC, stall_s=3.0)
    mon.set_matched(1, 0.0)
    mon.set_lost(50)
    mon.set_incompatible(2, 'durability')
    mon.resubscribed(matched_events=True)
    assert (mon.matched, mon.lost, mon.incompatible) == (0, 0, 0)
    assert _tick(mon, 0.0, 1, frames_per_s=30) is None
    mon.resubscribed(matched_events=False)
    assert mon.matched is None and mon.matched_publishers() == 1


def test_codes_are_the_documented_ones():
    text = open('docs/node.md').read()
    for code in CODES:
        assert f'`{code}`' in text, code
