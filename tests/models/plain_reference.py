"""Shared by the adapter tests: two chunks through the bounded cache against plain transformers."""
import torch

from ros2_infmllm.engine import StreamingSession
from ros2_infmllm.memory import make_policy
from ros2_infmllm.models.base import Chunk
from ros2_infmllm.models.registry import load_adapter


def bounded_and_plain_logits(path) -> tuple:
    """Last-position logits of the checkpoint at ``path``: (bounded cache, plain forward).

    The budget is above the tokens, so nothing is evicted and the two must agree.
    """
    from transformers import AutoModelForCausalLM
    ad = load_adapter(str(path), device="cpu", dtype="float32")    # as the reference
    ref = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True).eval()
    a = ad.encode("<|im_start|>system\nwatch frames<|im_end|>\n")
    b = ad.encode("[cam 00:00:01.0] red square, bright\n")
    s = StreamingSession(ad, make_policy("inf_mllm", budget=512, n_sink=4, n_recent=64,
                                         window=8))
    s.cache.begin_source(0, kind="system")
    ad.forward(Chunk(a, "system"), s.cache)
    s.cache.begin_source(1, stamp=1.0, kind="frame")
    got = ad.forward(Chunk(b, "frame"), s.cache)
    with torch.no_grad():
        want = ref(input_ids=torch.cat([a, b], dim=1)).logits[0, -1]
    return got, want
