"""Reading labelled probe data: encodings, quotes and line separators (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lens.errors import ToxlensError
from lens.probe import load_labelled


def test_jsonl_keeps_unicode_line_separators(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    rows = [{"text": "one\u2028two", "label": 1}, {"text": "three\u0085four", "label": 0}]
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows), encoding="utf-8")
    assert load_labelled(p, "text", "label", [1]) == (["one\u2028two", "three\u0085four"], [1, 0])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_non_utf8_names_line_and_byte(tmp_path: Path, suffix: str) -> None:
    p = tmp_path / f"d{suffix}"
    good = '{"text": "a", "label": 1}\n' if suffix == ".jsonl" else "text,label\n"
    p.write_bytes(good.encode() + b'{"text": "\xff", "label": 0}\n')
    with pytest.raises(ToxlensError, match=rf"{p.name}:2: byte 0xff at offset {len(good) + 10} is not UTF-8"):
        load_labelled(p, "text", "label", [1])


def test_unterminated_quote_names_the_opening_line(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text('text,label\nfine,1\n"open,0\nnext,1\nlast,0\n')
    with pytest.raises(ToxlensError, match=r"d.csv:3: a quoted field opened on line 3 is never closed"):
        load_labelled(p, "text", "label", ["1"])
    # a closed quote spanning lines is fine
    p.write_text('text,label\n"two\nlines",1\nplain,0\n')
    assert load_labelled(p, "text", "label", ["1"]) == (["two\nlines", "plain"], [1, 0])


DAVIDSON = Path(__file__).resolve().parents[2] / "shared/data/davidson/labeled_data.csv"


@pytest.mark.skipif(not DAVIDSON.is_file(), reason="Davidson data not present")
def test_davidson_still_reads_strictly() -> None:
    texts, labels = load_labelled(DAVIDSON, "tweet", "class", ["0", "1"])
    assert len(texts) == 24783 and sum(labels) == 20620
