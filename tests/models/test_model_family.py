"""Adding a model family is one adapter file plus one registry line (docs/architecture.md).

The worked example's two code blocks are read from docs/architecture.md and run as they
are: the file becomes the module ``ros2_infmllm.models.qwen3`` and the line one more
``FAMILIES`` entry, both for this test only. A tiny random Qwen3 saved to a temporary
directory then loads through ``load_adapter`` and streams through a bounded session.
"""

from __future__ import annotations

import ast
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from ros2_infmllm.engine import StreamingSession
from ros2_infmllm.memory import make_policy
from ros2_infmllm.models import registry
from ros2_infmllm.models.base import ModelError
from ros2_infmllm.models.tiny import byte_tokenizer

from plain_reference import bounded_and_plain_logits

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "ros2_infmllm" / "models"


def _example_blocks() -> tuple[str, str, str]:
    """(module name, adapter file source, registry line) of the docs' worked example."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text[text.index("## Adding a model family"):]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    adapter, entry = blocks[0], blocks[1]
    name = re.match(r"# ros2_infmllm/models/(\w+)\.py\n", adapter).group(1)
    lines = [ln for ln in entry.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(lines) == 1, f"the registry change is not one line: {lines}"
    return name, adapter, lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A seeded tiny Qwen3 (a model_type FAMILIES does not have) + the byte tokenizer."""
    from transformers import AutoModelForCausalLM, Qwen3Config
    tok = byte_tokenizer()
    config = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=16, max_position_embeddings=2048, eos_token_id=258,
                         bos_token_id=256, pad_token_id=260, tie_word_embeddings=False)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_qwen3")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def family(monkeypatch):
    """Register the docs' example family (its file as a module, its FAMILIES line)."""
    name, source, line = _example_blocks()
    module = types.ModuleType(f"ros2_infmllm.models.{name}")
    module.__package__ = "ros2_infmllm.models"
    exec(compile(source, f"docs/architecture.md ({name}.py)", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    (model_type, target), = ast.literal_eval("{" + line + "}").items()
    assert model_type not in registry.FAMILIES, f"{model_type} is a real family already"
    monkeypatch.setitem(registry.FAMILIES, model_type, target)
    return model_type


def _frame(i: int) -> np.ndarray:
    img = np.full((40, 56, 3), 30 * i % 256, dtype=np.uint8)
    img[5:20, 5 + 3 * i:20 + 3 * i, i % 3] = 250
    return img


def test_unregistered_model_type_is_refused_with_the_supported_ones(checkpoint):
    """Without the registry line the model_type has no adapter, and the error says so."""
    with pytest.raises(ModelError, match=r"model_type 'qwen3' has no adapter; supported: "):
        registry.load_adapter(str(checkpoint), device="cpu")


def test_new_family_from_the_worked_example_streams_and_answers(checkpoint, family):
    """One file + one line: the new family loads, streams past its budget and answers."""
    ad = registry.load_adapter(str(checkpoint), device="cpu")
    assert ad.family == family == ad.model.config.model_type
    assert ad.model.config._attn_implementation == "infmllm_sdpa"
    s = StreamingSession(ad, make_policy("inf_mllm", budget=96, n_sink=4, n_recent=32,
                                         window=8), evidence_k=2)
    for i in range(8):
        assert s.ingest_frame(_frame(i), 10.0 + i, "cam").tokens > 0
    assert s.cache.describe()["compactions"] > 0                 # past the budget
    ans = s.ask("What changed?", max_new_tokens=4)
    assert isinstance(ans.text, str) and ans.timings["new_tokens"] <= 4
    assert set(ans.evidence_stamps) <= {10.0 + i for i in range(8)}
    assert s.status().cache_tokens <= 96 + 64


def test_new_family_under_budget_gives_the_plain_transformers_logits(checkpoint, family):
    """Budget above the tokens: two chunks through the bounded cache == one plain forward."""
    got, want = bounded_and_plain_logits(checkpoint)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_only_the_adapter_constructor_switches_the_attention():
    """``use_scoring_attention`` is called in models/ by base.py only (ModelAdapter)."""
    callers = []
    for path in sorted(MODELS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(
                    node.func, "attr", None)) == "use_scoring_attention":
                callers.append(f"{path.name}:{node.lineno}")
    assert [c.split(":")[0] for c in callers] == ["base.py"], callers
