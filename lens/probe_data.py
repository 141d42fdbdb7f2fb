"""Labelled texts for probes: a CSV (header row) or JSONL file read into texts and 0/1 labels."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError


def load_labelled(
    path: str | Path,
    text_col: str,
    label_col: str,
    positive_labels: Sequence[str | int],
    negative_labels: Sequence[str | int] | None = None,
    limit: int | None = None,
) -> tuple[list[str], list[int]]:
    """Texts and 0/1 labels from a CSV (header row) or JSONL file.

    A row is positive (1) when ``str(row[label_col])`` is one of ``positive_labels``; otherwise it is
    negative, unless ``negative_labels`` is given, in which case other values are errors.
    Malformed rows raise with their line number. ``limit`` keeps only the first ``limit`` rows.
    """
    p = Path(path)
    if not p.is_file():
        raise ToxlensError(f"labelled data file {str(p)!r} does not exist")
    pos = {str(v) for v in positive_labels}
    neg = None if negative_labels is None else {str(v) for v in negative_labels}
    if not pos:
        raise ToxlensError("positive_labels is empty; expected at least one label value")
    texts: list[str] = []
    labels: list[int] = []
    for line, row in _rows(p):
        if limit is not None and len(texts) >= limit:
            break
        missing = [c for c in (text_col, label_col) if c not in row or row[c] is None]
        if missing:
            raise ToxlensError(f"{p}:{line}: missing column(s) {missing}; row has {sorted(row)}")
        text, label = row[text_col], str(row[label_col]).strip()
        if not isinstance(text, str) or not text.strip():
            raise ToxlensError(f"{p}:{line}: column {text_col!r} must be a non-empty string, got {text!r}")
        if neg is not None and label not in pos | neg:
            raise ToxlensError(
                f"{p}:{line}: label {label!r} is neither positive {sorted(pos)} nor negative {sorted(neg)}"
            )
        texts.append(text)
        labels.append(int(label in pos))
    if not texts:
        raise ToxlensError(f"{p}: no rows found; expected a header and at least one row")
    return texts, labels


def read_utf8(p: Path) -> str:
    """The text of ``p`` decoded as UTF-8 (a leading byte-order mark dropped); bytes that are not UTF-8
    are an error naming their line and offset."""
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ToxlensError(
            f"{p}:{line}: byte 0x{raw[err.start]:02x} at offset {err.start} is not UTF-8; "
            "expected a UTF-8 text file (re-encode it, e.g. iconv -f latin1 -t utf-8)"
        ) from err


def _rows(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    text = read_utf8(p)
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        # split on \n only: str.splitlines would also split inside a JSON string holding U+2028
        for n, raw in enumerate(text.split("\n"), 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as err:
                raise ToxlensError(
                    f"{p}:{n}: invalid JSON ({err.msg}); expected one object per line"
                ) from err
            if not isinstance(obj, dict):
                raise ToxlensError(f"{p}:{n}: expected a JSON object, got {type(obj).__name__}")
            yield n, obj
    else:
        # strict: a quote left open is an error at the end of the file instead of one huge last field
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        start = 2
        try:
            for row in reader:
                if None in row:
                    raise ToxlensError(
                        f"{p}:{start}: {len(row) + len(row[None]) - 1} fields, "  # type: ignore[index]
                        f"expected {len(reader.fieldnames or [])}"
                    )
                yield start, row
                start = reader.line_num + 1
        except csv.Error as err:
            if "unexpected end of data" in str(err):
                raise ToxlensError(
                    f"{p}:{start}: a quoted field opened on line {start} is never closed (the file ends "
                    f"inside it); expected a closing double quote"
                ) from err
            raise ToxlensError(f"{p}:{reader.line_num}: malformed CSV ({err})") from err
