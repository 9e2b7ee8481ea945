"""The fault injector on the real tiny session, without ROS.

Faults fire inside the model call; the engine reports them as EngineError and rolls the
memory back.
"""

from __future__ import annotations

import numpy as np
import pytest
from harness import scene
from instrumented_node import InstrumentedSession


@pytest.fixture()
def session(tmp_path):
    """A real tiny-test session wrapped by the test-side fault injector."""
    from ros2_infmllm.engine import SessionConfig, build_session

    real = build_session(SessionConfig(model="tiny-test", device="cpu", budget=64, n_sink=4,
                                       n_recent=16, window=4, kernel=3))
    return InstrumentedSession(real, tmp_path, tmp_path / "record.jsonl"), tmp_path


@pytest.mark.parametrize("kind, words", [("error", "injected model fault"),
                                         ("oom", "out of memory"),
                                         ("cuda_oom", "out of memory"),
                                         ("cpu_oom", "not enough memory")])
def test_generation_fault_tiny(session, kind, words):
    from ros2_infmllm.engine import EngineError

    s, control = session
    s.ingest_frame(scene(0, 64, 48), 1.0, "cam")
    before = s.status().cache_tokens
    (control / f"generate.{kind}.1").touch()
    with pytest.raises(EngineError, match=words):
        s.ask("What is there?", max_new_tokens=3)
    assert not (control / f"generate.{kind}.1").exists()
    assert s.status().cache_tokens == before, "memory not rolled back"
    assert s.ask("And now?", max_new_tokens=3).text is not None


def test_ingest_fault_tiny(session):
    from ros2_infmllm.engine import EngineError

    s, control = session
    s.ingest_frame(scene(0, 64, 48), 1.0, "cam")
    d0 = s.status()
    (control / "ingest.oom.1").touch()
    with pytest.raises(EngineError, match="out of memory"):
        s.ingest_frame(scene(1, 64, 48), 2.0, "cam")
    d1 = s.status()
    assert d1.cache_tokens == d0.cache_tokens
    assert d1.frames_ingested == d0.frames_ingested
    s.ingest_frame(scene(2, 64, 48), 3.0, "cam")
    assert s.status().frames_ingested == d0.frames_ingested + 1


def test_records_written_tiny(session, tmp_path):
    s, _ = session
    for i in range(10):
        s.ingest_frame(np.zeros((48, 64, 3), np.uint8), float(i), "cam")
    rows = (tmp_path / "record.jsonl").read_text().splitlines()
    assert len(rows) == 10 and '"cache_tokens"' in rows[-1] and '"rss"' in rows[-1]
