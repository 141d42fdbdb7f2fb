"""Contrast pairs: JSONL, one ``{"toxic": ..., "benign": ...}`` object per line.

The two prompts of a pair must tokenize to the same length (errors name the line and both lengths);
different pairs may differ in length — sweeps batch them by length group, so no padding ever enters
a forward pass and no score depends on how pairs were grouped. Optional per-pair fields
``toxic_target`` / ``benign_target`` (single tokens, e.g. ``" idiot"`` / ``" friend"``) feed the
logit-difference metric.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from lens.errors import ToxlensError
from lens.model import LensModel


@dataclass(frozen=True)
class Pair:
    toxic: str
    benign: str
    toxic_ids: tuple[int, ...]
    benign_ids: tuple[int, ...]
    line: int
    toxic_target: str | None = None
    benign_target: str | None = None

    @property
    def length(self) -> int:
        return len(self.toxic_ids)


@dataclass
class ContrastPairs:
    pairs: list[Pair]
    source: str
    prepend_bos: bool
    _groups: dict[int, list[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ToxlensError(f"{self.source}: no contrast pairs")
        groups: dict[int, list[int]] = defaultdict(list)
        for i, pair in enumerate(self.pairs):
            groups[pair.length].append(i)
        self._groups = dict(sorted(groups.items()))

    def __len__(self) -> int:
        return len(self.pairs)

    def length_groups(self) -> dict[int, list[int]]:
        """Sequence length → indices of the pairs of that length (in file order)."""
        return self._groups

    def restricted(self, indices: Sequence[int]) -> ContrastPairs:
        """The same pairs, with :meth:`length_groups` (what every sweep iterates) covering only ``indices``.

        Pair indices stay global (per-pair metric targets keep working) and ``len`` stays the whole set,
        so a sweep fills only those rows. A sharded run gives each worker whole length groups: each
        group's batches are then exactly those of the unsharded run."""
        keep = set(indices)
        if not keep <= set(range(len(self.pairs))):
            raise ToxlensError(f"pair indices outside [0, {len(self.pairs)})")
        view = ContrastPairs(self.pairs, self.source, self.prepend_bos)
        groups = {n: [i for i in idx if i in keep] for n, idx in self._groups.items()}
        view._groups = {n: idx for n, idx in groups.items() if idx}
        return view

    def tokens(self, indices: list[int], side: str) -> Int[Tensor, "batch pos"]:
        """Token ids of one length group, ``side`` ``"toxic"`` or ``"benign"``."""
        if side not in ("toxic", "benign"):
            raise ToxlensError(f"side must be 'toxic' or 'benign', got {side!r}")
        rows = [getattr(self.pairs[i], f"{side}_ids") for i in indices]
        if len({len(r) for r in rows}) != 1:
            raise ToxlensError(f"pairs {indices} do not share one length")
        return torch.tensor(rows, dtype=torch.long)


PAIR_FIELDS = ("toxic", "benign", "toxic_target", "benign_target")


def check_pair_lines(lines: list[str], source: str = "<pairs>") -> list[tuple[int, dict[str, str]]]:
    """Validate JSONL pair lines without a model: ``(line number, object)`` per non-blank line.

    Checks the JSON, the fields and their types (``toxic_target``/``benign_target`` must be non-empty
    strings when present) and refuses a pair whose two prompts are the same text (its score would be 0/0).
    """
    out: list[tuple[int, dict[str, str]]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{source}, line {number}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ToxlensError(f"{where}: malformed JSON ({err.msg} at column {err.colno})") from err
        if not isinstance(obj, dict):
            raise ToxlensError(
                f"{where}: expected a JSON object with 'toxic' and 'benign', got {type(obj).__name__}"
            )
        for key in ("toxic", "benign"):
            if not isinstance(obj.get(key), str) or not obj[key]:
                raise ToxlensError(f"{where}: field {key!r} must be a non-empty string, got {obj.get(key)!r}")
        unknown = set(obj) - set(PAIR_FIELDS)
        if unknown:
            raise ToxlensError(f"{where}: unknown field(s) {sorted(unknown)}")
        for key in ("toxic_target", "benign_target"):
            if key in obj and (not isinstance(obj[key], str) or not obj[key]):
                raise ToxlensError(f"{where}: field {key!r} must be a non-empty string, got {obj[key]!r}")
        if obj["toxic"] == obj["benign"]:
            raise ToxlensError(
                f"{where}: the toxic and benign prompts are the same text {obj['toxic']!r}; "
                "expected a pair that differs (its score would divide by zero)"
            )
        out.append((number, obj))
    if not out:
        raise ToxlensError(f"{source}: file has no contrast pairs (empty)")
    return out


def read_pair_lines(path: str | Path) -> list[str]:
    """The lines of a pairs file (BOM dropped, split on ``"\\n"`` only — never on U+2028)."""
    from lens.textfiles import read_lines

    return read_lines(path, "pairs file")


def check_pairs_file(path: str | Path) -> None:
    """Validate a pairs file before any model is loaded (see :func:`check_pair_lines`)."""
    check_pair_lines(read_pair_lines(path), str(path))


def parse_pairs(
    lines: list[str], model: LensModel, source: str = "<pairs>", prepend_bos: bool = False
) -> ContrastPairs:
    """Validate and tokenize JSONL lines (see module docstring). Blank lines are skipped."""
    pairs: list[Pair] = []
    n_ctx = model.info.n_ctx
    for number, obj in check_pair_lines(lines, source):
        where = f"{source}, line {number}"
        toxic_ids = tuple(model.tokenize(obj["toxic"], prepend_bos))
        benign_ids = tuple(model.tokenize(obj["benign"], prepend_bos))
        if len(toxic_ids) != len(benign_ids):
            raise ToxlensError(
                f"{where}: the toxic prompt is {len(toxic_ids)} tokens and the benign prompt is "
                f"{len(benign_ids)} tokens; a pair must tokenize to the same length"
            )
        if len(toxic_ids) > n_ctx:
            raise ToxlensError(
                f"{where}: prompt is {len(toxic_ids)} tokens, past the model's context length {n_ctx}"
            )
        if len(toxic_ids) == 0:
            raise ToxlensError(f"{where}: prompt tokenizes to zero tokens")
        if toxic_ids == benign_ids:
            raise ToxlensError(
                f"{where}: the toxic and benign prompts tokenize to the same tokens; "
                "expected a pair that differs (its score would divide by zero)"
            )
        pairs.append(
            Pair(
                obj["toxic"],
                obj["benign"],
                toxic_ids,
                benign_ids,
                number,
                obj.get("toxic_target"),
                obj.get("benign_target"),
            )
        )
    if not pairs:
        raise ToxlensError(f"{source}: file has no contrast pairs (empty)")
    return ContrastPairs(pairs, source, prepend_bos)


def load_pairs(path: str | Path, model: LensModel, prepend_bos: bool = False) -> ContrastPairs:
    """Read a JSONL contrast-pair file (see :func:`parse_pairs`)."""
    return parse_pairs(read_pair_lines(path), model, str(path), prepend_bos)
