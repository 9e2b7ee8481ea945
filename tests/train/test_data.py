"""A frame's token words follow its truth, and training ids read like the adapter's chunk."""
import numpy as np

from ros2_infmllm.models.visual_tokens import COUNT_SLOT, SLOTS, TEXT
from ros2_infmllm.train.data import COUNT_WORDS, SLOT_VOCAB, TRAIN, WORDS, scene, slot_words
from ros2_infmllm.train.scenes import Item, Truth, questions


def test_slot_words_name_count_columns_and_light():
    truth = Truth((Item("box", "right", colour="green"), Item("qr", "left", ident="EXIT"),
                   Item("box", "middle", colour="pink")), "dim")
    assert slot_words(truth) == [" two", " QR", " pink", " green", " dim"]
    assert slot_words(Truth((), "bright")) == [" no", " nothing", " nothing", " nothing",
                                               " bright"]


def test_every_slot_word_is_in_its_slots_vocabulary():
    assert len(SLOT_VOCAB) == len(SLOTS) == len(TEXT) - 1
    assert SLOT_VOCAB[COUNT_SLOT] == COUNT_WORDS and len(set(WORDS)) == len(WORDS)
    for i in range(100):
        words = slot_words(scene(TRAIN, i)[0])
        assert all(w in vocab for w, vocab in zip(words, SLOT_VOCAB)), (i, words)


def test_dark_or_normal_question_is_only_asked_when_one_of_them_is_right():
    rng = np.random.default_rng(0)
    asked = set()
    for light in ("dim", "bright") * 30:
        for kind, q, _ in questions(Truth((), light), rng):
            asked.add(q)
    assert "Was the last frame dark or normal light?" not in asked
