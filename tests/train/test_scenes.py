"""Rendered training scenes show what their truth says (the projector learns from it)."""
import numpy as np

from ros2_infmllm.train.data import HELDOUT, TRAIN, scene
from ros2_infmllm.train.scenes import (COLOURS, LIGHTS, PLACES, measured_light, questions,
                                       random_truth, render, timed_questions)


def _nearest_colour(rgb: np.ndarray) -> str:
    return min(COLOURS, key=lambda c: float(np.abs(np.array(COLOURS[c]) - rgb).sum()))


def test_light_label_is_the_describer_band_of_the_rendered_frame():
    for i in range(40):
        truth, rgb, _ = scene(TRAIN, i)
        assert measured_light(rgb) == truth.light, (i, truth)


def test_box_colour_is_drawn_in_its_third():
    checked = 0
    for i in range(60):
        rng = np.random.default_rng([5, i])
        truth = random_truth(rng)
        if truth.light != "normal":
            continue
        rgb = render(truth, rng, 160, 120).astype(float)
        for box in truth.boxes:
            col = PLACES.index(box.place)
            part = rgb[:, col * 53 + 10:(col + 1) * 53 - 10].reshape(-1, 3)
            # the most saturated pixels of the third are the box's
            sat = part.max(1) - part.min(1)
            top = part[sat >= np.percentile(sat, 90)].mean(0)
            assert _nearest_colour(top) == box.colour, (i, truth, top)
            checked += 1
    assert checked > 20


def test_questions_answer_from_the_truth():
    rng = np.random.default_rng(0)
    truth = random_truth(np.random.default_rng(3))
    qa = {k: a for k, _, a in questions(truth, rng)}
    assert qa["count"] == str(len(truth.boxes))
    assert qa["light"] == truth.light in LIGHTS
    if truth.boxes:
        assert qa["colour"] in {b.colour for b in truth.boxes}
        assert qa["place"] in {b.place for b in truth.boxes}


def test_timed_question_names_its_frame_time():
    rng = np.random.default_rng(1)
    truths = [random_truth(np.random.default_rng([9, i]), max_boxes=1) for i in range(3)]
    stamps = [3600.0 * 10 + 5.0, 3600.0 * 10 + 40.0, 3600.0 * 10 + 90.0]
    for kind, q, a in timed_questions(truths, stamps, rng):
        t = q.split(" at ")[1].rstrip("?")
        j = ["10:00:05", "10:00:40", "10:01:30"].index(t)
        if kind == "timed_light":
            assert a == truths[j].light
        else:
            assert truths[j].boxes and a in (truths[j].boxes[0].colour, truths[j].boxes[0].place)


def test_heldout_scenes_are_not_training_scenes():
    for i in range(5):
        a = scene(TRAIN, i)[1]
        b = scene(HELDOUT, i)[1]
        assert a.shape != b.shape or not np.array_equal(a, b)
