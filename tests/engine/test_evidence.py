"""Evidence ranking: attention checked against the frames' describer text."""
from ros2_infmllm.engine.evidence import grounding, rank_evidence, words

# lines as the frame describer writes them (tag included), from the sample bag
TEXTS = {
    1: '[cam front 22:13:20.0] nothing in view; dim light; first frame.',
    2: '[cam front 22:14:42.5] red box on the left, ArUco marker 17 on the right; dim light.',
    3: '[cam front 22:14:45.0] red box on the left; dim light; some motion.',
    4: "[cam front 22:14:55.0] QR code 'PARCEL FOR ANNA'; dim light; much motion.",
    5: '[cam front 22:17:30.0] no change.',
}


def test_words_drop_the_tag_and_case():
    assert words('[cam front 22:14:42.5] Red box on the left, marker 17.') == {
        'red', 'box', 'left', 'marker', '17'}


def test_words_everywhere_weigh_nothing_and_rare_words_most():
    every = {**TEXTS, 5: '[cam front 22:17:30.0] no change; dim light.'}
    assert set(grounding('Dim light.', every).values()) == {0.0}
    common = grounding('Dim light.', TEXTS)[2]     # in four of five frames
    rare = grounding('The parcel is for Anna.', TEXTS)
    assert rare[4] > 4 * common > 0 and all(rare[f] == 0 for f in (1, 2, 3, 5))


def test_the_grounded_frame_wins_over_more_attended_ones():
    # the last frame before the question and the first frame draw most attention
    attention = {1: 30.0, 2: 9.0, 3: 8.0, 4: 7.0, 5: 50.0}
    assert rank_evidence('The parcel for is Anna.', attention, TEXTS, k=3) == [4]
    # marker 17 and red box: frame 2 shares both, frame 3 only the box
    assert rank_evidence('Marker 17, next to the red box.', attention, TEXTS, k=3)[0] == 2


def test_without_shared_words_or_text_it_is_the_most_attended():
    attention = {1: 30.0, 2: 9.0, 5: 50.0}
    assert rank_evidence('I do not know.', attention, TEXTS, k=2) == [5, 1]
    assert rank_evidence('Marker 17.', attention, {f: '' for f in attention}, k=2) == [5, 1]


def test_only_frames_in_memory_and_at_most_k():
    attention = {3: 1.0, 5: 2.0}                     # frame 2 was evicted
    assert rank_evidence('Marker 17 by the red box.', attention, TEXTS, k=3) == [3]
    assert rank_evidence('anything', attention, TEXTS, k=0) == []
