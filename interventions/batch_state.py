"""The rows of one decoding batch and the tensors aligned with them (used by :mod:`interventions.decoding`).

* :class:`Row` is one sequence's state: its tokens and scores, the physical cache slot of each logical
  position, its rollback bookkeeping and why it finished.
* :class:`Batch` holds the rows still being decoded, in batch order, and the attention mask over the
  cache slots. A row leaves the batch when it finishes (:meth:`Batch.drop_finished`): its batch row is
  removed from the mask and from every layer's keys and values in the ``DynamicCache``, so later
  forwards run on the live rows only. Nothing a row computes depends on the other rows (own position
  ids, mask, generator), so dropping rows changes no token and no score.
* Physical cache slots are shared by the batch: a rollback masks a row's discarded slots out, and the
  trailing slots that no live row uses any more are cropped away (:meth:`Batch.crop`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interventions.policy import RollbackEvent


@dataclass
class Row:
    prompt: list[int]
    gen: torch.Generator
    tokens: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    prompt_scores: list[float] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)  # physical cache slot of each logical position
    rollbacks: list[RollbackEvent] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    forbid: dict[int, set[int]] = field(default_factory=dict)
    safe_keep: int = 0  # generated tokens kept at the latest safe point
    safe_logits: Tensor | None = None
    refeed: bool = False  # feed the last kept token again (corrective steering) instead of sampling
    correct_left: int = 0
    forward_tokens: int = 0
    recomputed: int = 0
    max_fed: int = -1
    done: str = ""

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.tokens)


class Batch:
    """The live rows (batch order) and the ``[rows, slots]`` attention mask, on ``device``."""

    def __init__(self, rows: list[Row], pad: int, device: torch.device) -> None:
        self.rows = list(rows)
        self.device = device
        b, width = len(rows), max(len(r.prompt) for r in rows)
        self.prompt_ids = torch.full((b, width), pad, dtype=torch.long)
        mask = torch.zeros(b, width, dtype=torch.long)
        self.prompt_pos = torch.zeros(b, width, dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r.prompt)
            self.prompt_ids[i, width - n :] = torch.tensor(r.prompt)
            mask[i, width - n :] = 1
            self.prompt_pos[i, width - n :] = torch.arange(n)
            r.slots = list(range(width - n, width))
            r.forward_tokens, r.max_fed = n, n - 1
        self.mask = mask.to(device)

    @property
    def size(self) -> int:
        return len(self.rows)

    @property
    def width(self) -> int:
        """Physical cache slots (the mask's second dimension)."""
        return int(self.mask.shape[1])

    def drop_finished(self, cache: Any) -> list[int]:
        """Remove the finished rows from the batch, the mask and ``cache``; returns the kept rows' old
        batch indices (in order)."""
        keep = [k for k, r in enumerate(self.rows) if not r.done]
        if len(keep) == len(self.rows):
            return keep
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        cache.batch_select_indices(idx)
        self.mask = self.mask.index_select(0, idx)
        self.rows = [self.rows[k] for k in keep]
        return keep

    def extend(self) -> None:
        """One new slot at the end, into which every (live) row feeds a token."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.size, 1)], dim=1)

    def mask_out(self, k: int, slots: list[int]) -> None:
        """Batch row ``k`` no longer attends to ``slots`` (a rollback discarded them)."""
        if slots:
            self.mask[k, slots] = 0

    def crop(self, cache: Any) -> None:
        """Physically drop trailing cache slots that no live row uses any more."""
        used = max((max(r.slots) for r in self.rows if r.slots), default=-1) + 1
        width = self.width
        if used < width and not bool(self.mask[:, used:].any()):
            cache.crop(used - width)  # negative: remove that many trailing slots
            self.mask = self.mask[:, :used]
