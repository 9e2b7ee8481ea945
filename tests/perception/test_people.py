"""People part: HOG bodies on real frames (vtest.avi pedestrians), and one count with faces."""

from __future__ import annotations

import numpy as np

from ros2_infmllm.eval.eyes import read_image
from ros2_infmllm.perception.composer import _people_once
from ros2_infmllm.perception.part import Observation, View, group_label
from ros2_infmllm.perception.people import PeoplePart

VTEST = "usr/share/doc/opencv-doc/examples/data/vtest.avi#200"
BUS = "usr/share/doc/labelme-examples/examples/semantic_segmentation/data_annotated/" \
      "2011_000025.jpg"
FRUITS = "usr/share/doc/opencv-doc/examples/data/fruits.jpg"


def test_people_part_finds_pedestrians_and_no_person_where_there_is_none(imagery_root):
    root = imagery_root
    part = PeoplePart()
    assert part.ready(), part.missing
    walkers = read_image(root, VTEST)              # 768x576, pedestrians ~100 px tall
    boxes, weights = part.detect(walkers)
    assert len(boxes) >= 2 and weights.min() >= part.min_weight
    assert all(b[3] - b[1] > 1.5 * (b[2] - b[0]) for b in boxes)   # upright bodies
    [obs] = part.see(View(walkers[::2, ::2].copy(), full=walkers))
    assert obs.label == f"{len(boxes)} people" and obs.part == "people"
    for path in (BUS, FRUITS):                     # a bus and a bowl of fruit: nobody
        assert part.see(View(read_image(root, path))) == [], path
    # the margin is what keeps them out: at no margin the bus photo has a false body
    loose = PeoplePart(min_weight=0.0)
    assert loose.ready() and len(loose.detect(read_image(root, BUS))[0]) >= 1


def test_a_face_inside_a_body_is_one_person_and_a_face_alone_is_another():
    faces = group_label(np.array([[0.12, 0.22, 0.16, 0.26],       # inside the first body
                                  [0.70, 0.10, 0.76, 0.18]]), 0.9, "faces")
    bodies = group_label(np.array([[0.10, 0.20, 0.20, 0.60],
                                   [0.40, 0.30, 0.48, 0.70]]), 0.7, "people")
    text = Observation("text 'EXIT'", part="text")
    merged = _people_once([faces, text, bodies])
    assert [o.label for o in merged] == ["3 people", "text 'EXIT'"]
    assert merged[0].part == "people" and len(merged[0].members) == 3
    assert _people_once([faces, text]) == [faces, text]
