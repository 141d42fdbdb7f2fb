"""Reading prompt and text lists for evaluation.

* ``.txt``: one item per line (lines end at ``"\\n"``; a trailing ``"\\r"`` is dropped too). Nothing else is
  stripped (leading/trailing spaces change the tokens); blank (whitespace-only) lines are skipped.
* ``.jsonl``: one JSON object per line with a non-empty string field (``"prompt"`` for
  :func:`read_prompts`, ``"text"`` for :func:`read_texts`); other fields are ignored; blank lines are
  skipped.

Every text file toxlens reads goes through :func:`read_text_file` / :func:`read_lines`: a UTF-8 byte-order
mark is dropped, lines end at ``"\n"`` only (never at U+2028 and the like), and a missing path, a directory
or bad UTF-8 is one clear error.

Any other suffix, a missing file, bad UTF-8, invalid JSON, a missing/non-string/empty field or a file
with no items raises :class:`~lens.errors.ToxlensError` naming ``file:line``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError

SUFFIXES = (".txt", ".jsonl")


def read_text_file(path: str | Path, what: str = "file") -> str:
    """The text of ``path`` (UTF-8, a leading byte-order mark dropped); ``what`` names it in errors."""
    p = Path(path)
    if p.is_dir():
        raise ToxlensError(f"{what} {str(p)!r} is a directory; expected a text file")
    if not p.is_file():
        raise ToxlensError(f"{what} {str(p)!r} does not exist")
    try:
        return p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ToxlensError(
            f"{what} {str(p)!r}: not valid UTF-8 ({err.reason} at byte {err.start}); expected UTF-8 text"
        ) from err
    except OSError as err:
        raise ToxlensError(f"{what} {str(p)!r} cannot be read: {err.strerror}") from err


def read_lines(path: str | Path, what: str = "file") -> list[str]:
    """Lines of ``path`` split on ``"\n"`` only, a trailing ``"\r"`` dropped (see :func:`read_text_file`)."""
    return [line.removesuffix("\r") for line in read_text_file(path, what).split("\n")]


def read_csv_rows(path: str | Path, what: str = "CSV file") -> list[dict[str, str]]:
    """Rows of a CSV file with a header (see :func:`read_text_file`). A quote that is never closed, a
    row with more fields than the header or any other malformed CSV is an error naming the line."""
    import csv
    import io

    reader = csv.DictReader(io.StringIO(read_text_file(path, what), newline=""), strict=True)
    rows: list[dict[str, str]] = []
    start = 2
    try:
        for row in reader:
            if None in row:
                raise ToxlensError(
                    f"{what} {str(path)!r}, line {start}: more fields than the header's {len(reader.fieldnames or [])}"
                )
            rows.append(row)
            start = reader.line_num + 1
    except csv.Error as err:
        if "unexpected end of data" in str(err):
            raise ToxlensError(
                f"{what} {str(path)!r}, line {start}: a quoted field is never closed (unterminated '\"')"
            ) from err
        raise ToxlensError(f"{what} {str(path)!r}, line {reader.line_num}: malformed CSV ({err})") from err
    return rows


def read_prompts(path: str | Path) -> list[str]:
    """Generation prompts: ``.txt`` lines or the ``"prompt"`` field of ``.jsonl`` objects."""
    return read_items(path, "prompt")


def read_texts(path: str | Path) -> list[str]:
    """Texts (e.g. neutral text for perplexity): ``.txt`` lines or the ``"text"`` field of ``.jsonl``."""
    return read_items(path, "text")


def read_items(path: str | Path, field: str) -> list[str]:
    """The items of a ``.txt`` or ``.jsonl`` file (``field`` names the JSONL string field)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise ToxlensError(
            f"{str(p)!r}: unsupported file type {p.suffix!r}; expected one of {list(SUFFIXES)}"
        )
    lines = read_lines(p, "text file")
    items: list[str] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        items.append(line if suffix == ".txt" else _json_field(p, n, line, field))
    if not items:
        what = "non-blank line" if suffix == ".txt" else f"JSON object with a {field!r} field"
        raise ToxlensError(f"{p}: no items found; expected at least one {what}")
    return items


def _json_field(p: Path, n: int, line: str, field: str) -> str:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise ToxlensError(f"{p}:{n}: invalid JSON ({err.msg}); expected one object per line") from err
    if not isinstance(obj, dict):
        raise ToxlensError(f"{p}:{n}: expected a JSON object, got {type(obj).__name__}")
    if field not in obj:
        raise ToxlensError(f"{p}:{n}: missing field {field!r}; object has {sorted(obj)}")
    value = obj[field]
    if not isinstance(value, str) or not value.strip():
        raise ToxlensError(f"{p}:{n}: field {field!r} must be a non-empty string, got {value!r}")
    return value


DATASET_PREFIX = "hf:"


def read_text_source(spec: str, limit: int | None = None) -> list[str]:
    """Neutral text from a file (see :func:`read_texts`) or a Hugging Face ``datasets`` name:
    ``hf:NAME[#CONFIG]:SPLIT[:COLUMN]`` (column default ``text``), e.g. ``hf:wikitext#wikitext-2-raw-v1:test``
    or ``hf:allenai/c4#en:validation``.
    Blank rows are skipped; ``limit`` keeps the first ``limit`` items. ``datasets`` loads from its cache or
    the hub (it must be installed; an unreachable hub fails with the dataset's name in the message)."""
    if not spec.startswith(DATASET_PREFIX):
        items = read_texts(spec)
        return items[:limit] if limit is not None else items
    parts = spec[len(DATASET_PREFIX) :].split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ToxlensError(f"dataset spec {spec!r}: expected 'hf:NAME[#CONFIG]:SPLIT[:COLUMN]'")
    name, split = parts[0], parts[1]
    column = parts[2] if len(parts) == 3 else "text"
    path, _, config = name.partition("#")
    try:
        import datasets
    except ImportError as err:
        raise ToxlensError(
            f"dataset spec {spec!r} needs the `datasets` package: pip install datasets"
        ) from err
    ds = _load_dataset(datasets, path, config or None, split)
    if column not in ds.column_names:
        raise ToxlensError(
            f"dataset {path!r} split {split!r} has no column {column!r}; columns: {ds.column_names}"
        )
    items = [t for t in ds[column] if isinstance(t, str) and t.strip()]
    if not items:
        raise ToxlensError(f"dataset {path!r} split {split!r} column {column!r} holds no non-blank text")
    return items[:limit] if limit is not None else items


def _load_dataset(datasets: Any, path: str, config: str | None, split: str) -> Any:
    """Load from the cache alone when the hub is unreachable (one quick check first, no retries)."""
    from lens.loading import hub_unreachable_reason

    reason = hub_unreachable_reason()
    try:
        if reason is None:
            return datasets.load_dataset(path, config, split=split)
        with _offline(datasets):
            return datasets.load_dataset(path, config, split=split)
    except Exception as err:  # datasets raises many types (network, missing split, …)
        first = (str(err).strip().splitlines() or [""])[0][:300]
        where = f"dataset {path!r} (config {config}, split {split!r})"
        if reason is not None:
            raise ToxlensError(
                f"could not load {where} from the local datasets cache ({type(err).__name__}: {first}) "
                f"and the hub is unreachable ({reason}); expected a cached dataset or a .txt/.jsonl file"
            ) from err
        raise ToxlensError(f"could not load {where}: {type(err).__name__}: {first}") from err


@contextmanager
def _offline(datasets: Any) -> Iterator[None]:
    """Make ``datasets`` and ``huggingface_hub`` read only their caches within the block."""
    targets: list[tuple[Any, str]] = [(getattr(datasets, "config", None), "HF_HUB_OFFLINE")]
    targets.append((getattr(datasets, "config", None), "HF_DATASETS_OFFLINE"))
    try:
        import huggingface_hub.constants as hub_constants

        targets.append((hub_constants, "HF_HUB_OFFLINE"))
    except ImportError:
        pass
    saved = [
        (obj, name, getattr(obj, name)) for obj, name in targets if obj is not None and hasattr(obj, name)
    ]
    old_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    try:
        for obj, name, _ in saved:
            setattr(obj, name, True)
        os.environ.update({k: "1" for k in old_env})
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
