"""The sample bag generator writes a bag that rosbags reads back, with visible events."""
import cv2
import numpy as np
import pytest

from ros2_infmllm.eval.bagio import bag_start, camera_topics, decode_image, iter_frames
from ros2_infmllm.eval.make_sample_bag import BAG_START_NS, write_sample_bag
from ros2_infmllm.eval.questions import load_questions, sample_questions_path
from ros2_infmllm.eval.scenario import ARUCO_DICT, Scenario, SceneRenderer
from ros2_infmllm.models.frame_describer import marker_ids


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_bag_reads_back(tmp_path, storage):
    out = tmp_path / 'bag'
    info = write_sample_bag(out, duration=84.0, rate=5.0, storage=storage)
    assert info['counts'] == {'/camera/image_raw': 420, '/camera2/image_raw/compressed': 210}
    assert camera_topics(out) == {
        '/camera/image_raw': 'sensor_msgs/msg/Image',
        '/camera2/image_raw/compressed': 'sensor_msgs/msg/CompressedImage'}
    assert bag_start(out) == BAG_START_NS / 1e9
    frames = list(iter_frames(out, ['/camera/image_raw']))
    assert len(frames) == 420
    stamps = [f.stamp - BAG_START_NS / 1e9 for f in frames]
    assert np.allclose(stamps, np.arange(420) / 5.0, atol=1e-6)
    assert all(f.msg.encoding == 'rgb8' and f.msg.width == 160 for f in frames)
    # the ArUco marker of the first event (80..86 s) is detectable in the decoded frame
    det = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(ARUCO_DICT))
    img = decode_image(frames[410].msgtype, frames[410].msg)   # t = 82 s
    assert img.shape == (120, 160, 3)
    _, ids, _ = det.detectMarkers(img)
    assert 17 in marker_ids(ids)
    _, ids, _ = det.detectMarkers(decode_image(frames[10].msgtype, frames[10].msg))
    assert marker_ids(ids) == []
    jpg = next(iter_frames(out, ['/camera2/image_raw/compressed']))
    assert decode_image(jpg.msgtype, jpg.msg).shape == (120, 160, 3)


def test_generator_is_deterministic(tmp_path):
    a = SceneRenderer(Scenario(), seed=3).render(172.0)
    b = SceneRenderer(Scenario(), seed=3).render(172.0)
    c = SceneRenderer(Scenario(), seed=4).render(172.0)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    text, _, _ = cv2.QRCodeDetector().detectAndDecode(a)
    assert text == 'DOCK B'


def test_existing_bag_not_overwritten(tmp_path):
    write_sample_bag(tmp_path / 'b', duration=1.0, second_camera=False)
    with pytest.raises(FileExistsError):
        write_sample_bag(tmp_path / 'b', duration=1.0)
    with pytest.raises(ValueError):
        write_sample_bag(tmp_path / 'c', duration=1.0, storage='rosbag1')


def test_sample_questions_match_scenario():
    qs = load_questions(sample_questions_path())
    events = Scenario().events
    assert len(qs) >= 8 and any('far' in q.tags for q in qs)
    for q in qs:
        assert q.t < Scenario().duration
        for lo, hi in q.evidence:
            assert hi <= q.t
            # an event's whole span, or (a "still there?" question) its span so far while
            # it goes on past the question
            assert any(e.start == lo and (e.end == hi or hi < q.t < e.end)
                       for e in events), (q.id, lo, hi)
    far = [q for q in qs if 'far' in q.tags]
    assert min(q.t - max(hi for _, hi in q.evidence) for q in far) > 15.0


def test_bad_decode_raises():
    class Msg:
        height, width, step, encoding, data, is_bigendian = 2, 2, 6, 'yuv420', bytes(12), 0
    with pytest.raises(ValueError, match='not supported'):
        decode_image('sensor_msgs/msg/Image', Msg)
    Msg.encoding, Msg.data = 'rgb8', bytes(5)
    with pytest.raises(ValueError, match='data has 5 bytes'):
        decode_image('sensor_msgs/msg/Image', Msg)
