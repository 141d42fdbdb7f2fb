"""lens.tokens.default_words: the classifier-scored word list is cached on disk, keyed by what it depends on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lens import tokens

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys
from lens.tokens import default_words
words = default_words()
print(json.dumps({"n": len(words), "first": list(words[:3]), "imported": "profanity_check" in sys.modules}))
"""


def child(cache: str) -> dict:
    env = {**os.environ, "TOXLENS_CACHE": cache, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_reads_the_cache_without_the_classifier(tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    first, second = child(cache), child(cache)
    assert first["imported"] and not second["imported"]
    assert first["n"] == second["n"] > 0 and first["first"] == second["first"]
    files = list((tmp_path / "cache" / "words").glob("profanity-*.json"))
    assert len(files) == 1 and not list((tmp_path / "cache" / "words").glob("*.tmp"))
    # the cached list equals the classifier's own scoring (independent of the cache)
    assert tuple(json.loads(files[0].read_text())["words"]) == tokens._score_vocabulary(
        tokens.DEFAULT_MIN_PROB
    )
    off = child("off")
    assert off["imported"] and off["n"] == first["n"]


def test_stale_or_corrupt_entries_are_recomputed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOXLENS_CACHE", str(tmp_path))
    key = tokens._words_key(0.9)
    path = tokens._words_cache_path(key)
    assert path is not None
    path.parent.mkdir(parents=True)
    for bad in ["not json", json.dumps([1, 2]), json.dumps({"key": {**key, "min_prob": 0.5}, "words": ["x"]}),
                json.dumps({"key": key, "words": [1]})]:  # fmt: skip
        path.write_text(bad, encoding="utf-8")
        assert tokens._read_words_cache(path, key) is None
    tokens._write_words_cache(path, key, ("alpha", "beta"))
    assert tokens._read_words_cache(path, key) == ("alpha", "beta")
    # another threshold is another entry
    assert tokens._words_cache_path(tokens._words_key(0.5)) != path
