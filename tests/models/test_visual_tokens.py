"""The visual-token model (``model: lite0-qwen2.5-0.5b``): shipped projector, checksum, eyes.

The checksum tests read only the projector file (milliseconds). The real-weights test
loads the packaged LM, the EfficientNet-Lite0 tower and the shipped projector (a few
seconds from the converted copy) and asks a held-out rendered frame's colour question
through a streaming session; it is skipped, with the reason, where set-up has not joined
the LM.
"""
import shutil

import numpy as np
import pytest

from ros2_infmllm.models.base import ModelError
from ros2_infmllm.models.registry import weights_path
from ros2_infmllm.models.visual_tokens import (COLS, COUNT_SLOT, FEATURES, NAME, PROJECTOR_FILE,
                                               PROJECTOR_SHA256, ROWS, SLOT_COLUMNS,
                                               TOKEN_INPUT, check_words, load_projector,
                                               pooled_features, sha256_file)

try:
    weights_path(NAME)
    MISSING = ''
except ModelError as exc:
    MISSING = str(exc)


def test_shipped_projector_is_present_and_matches_its_checksum():
    """Fails with the loader's message when the file is missing or not the shipped one."""
    projector, meta = load_projector()
    assert sha256_file(PROJECTOR_FILE) == PROJECTOR_SHA256
    assert projector.fc1.in_features == TOKEN_INPUT and meta["model"] == NAME


def test_missing_projector_fails_with_a_clear_message(tmp_path):
    with pytest.raises(ModelError, match="projector weights missing"):
        load_projector(tmp_path / "absent.safetensors")


def test_damaged_projector_fails_its_checksum(tmp_path):
    copy = tmp_path / PROJECTOR_FILE.name
    shutil.copy(PROJECTOR_FILE, copy)
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum mismatch"):
        load_projector(copy)


def test_cell_features_keep_the_colour_where_it_is():
    """A red left half and a blue right half: the pixel-mean columns say so per cell."""
    import torch

    from ros2_infmllm.perception.efficientnet_lite0 import load_efficientnet_lite0, to_batch
    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[:, :80] = (210, 30, 30)
    rgb[:, 80:] = (30, 60, 210)
    with torch.no_grad():
        cells = pooled_features(load_efficientnet_lite0(), to_batch(rgb))[0]
    assert cells.shape == (ROWS * COLS, FEATURES)
    mean_rgb = cells[:, -6:-3].reshape(ROWS, COLS, 3)
    assert (mean_rgb[:, 0, 0] > mean_rgb[:, 0, 2]).all()    # left column red
    assert (mean_rgb[:, -1, 2] > mean_rgb[:, -1, 0]).all()  # right column blue


def test_count_token_is_the_number_of_columns_whose_token_is_a_box():
    """The count slot is derived: two columns confidently a colour, one nothing -> `` two``."""
    import torch
    projector, meta = load_projector()
    words = meta["words"]
    k = len(words)
    logits = torch.full((1, len(SLOT_COLUMNS), k), -30.0)
    for slot, word in ((1, " red"), (2, " nothing"), (3, " blue"), (4, " dim")):
        logits[0, slot, words.index(word)] = 30.0
    projector.logits = lambda cells: logits
    got = projector.words(torch.zeros(1, ROWS * COLS, FEATURES))[0]
    assert words[int(got[COUNT_SLOT].argmax())] == " two"
    assert float(got[COUNT_SLOT].max()) > 0.99 and torch.allclose(got.sum(-1), torch.ones(5))


def test_projector_for_another_lm_is_refused():
    """Its word rows must be this LM's embeddings of its words, else a clear error."""
    import torch
    projector, meta = load_projector()

    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [meta["words"].index(text)]}

    class Model:
        def __init__(self, table):
            self.table = torch.nn.Embedding.from_pretrained(table)

        def get_input_embeddings(self):
            return self.table

    check_words(projector, meta, Model(projector.word_embeddings), Tok())
    with pytest.raises(ModelError, match="differ from this LM"):
        check_words(projector, meta, Model(torch.randn_like(projector.word_embeddings)), Tok())


@pytest.fixture(scope="module")
def session():
    if MISSING:
        pytest.skip(f"{NAME}'s LM not assembled: {MISSING}")
    from ros2_infmllm.engine import SessionConfig, build_session
    return build_session(SessionConfig(model=NAME, device="cpu", policy="full",
                                       budget=1024, memory_log=False))


def test_shipped_weights_answer_a_heldout_frames_colour(session):
    """Pixels only: a held-out scene with one box; its colour comes back as the answer."""
    from ros2_infmllm.train.__main__ import correct
    from ros2_infmllm.train.data import HELDOUT, scene
    i = next(i for i in range(50) if len(scene(HELDOUT, i)[0].boxes) == 1
             and scene(HELDOUT, i)[0].light == "normal")
    truth, rgb, _ = scene(HELDOUT, i)
    session.reset()
    session.ingest_frame(rgb, 1_700_000_000.0, "front")
    answer = session.ask("What colour is the box?", max_new_tokens=8).text
    assert correct(answer, truth.boxes[0].colour, "colour"), (answer, truth)


def test_training_encodes_frames_and_questions_as_the_session_feeds_them(session):
    """The training examples' ids are the adapter's chunks, so training sees what runs."""
    from ros2_infmllm.train.data import Encoder, Example
    ad = session.adapter
    enc = Encoder(ad.tokenizer)
    ex = Example([0], [1_700_000_000.0], "front", "What colour is the box?", "red", "colour")
    chunk = ad.frame_chunk(np.zeros((120, 160, 3), np.uint8), 1_700_000_000.0, "front")
    assert enc.frame(1_700_000_000.0, "front") == chunk.input_ids[0].tolist()
    system = ad.text_chunk(ad.system_prompt, "system").input_ids[0].tolist()
    q = ad.text_chunk(f"What colour is the box? {ad.answer_instruction}", "user")
    tail = q.input_ids[0].tolist() + ad.answer_prefix().input_ids[0].tolist()
    assert enc.prompt(ex) == system + chunk.input_ids[0].tolist() + tail
