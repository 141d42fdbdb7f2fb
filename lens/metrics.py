"""Metrics on the final-position logits. Each is ``metric(logits, pair_index) -> one value per row``.

* :class:`ToxicLogMass` (default): ``m = log Σ_{t ∈ T} softmax(logits)_t`` at the final position,
  with ``T`` the toxic token set — computed as ``logsumexp(log_softmax(logits)[T])``.
* :class:`LogitDiff`: ``m = logits[toxic_target_i] − logits[benign_target_i]`` with per-pair targets.

Sweeps average ``m`` over pairs; the pair index says which pair each batch row belongs to.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens.errors import ToxlensError


class Metric:
    name: str = "metric"
    formula: str = ""

    def __call__(
        self, logits: Float[Tensor, "batch d_vocab"], pair_index: Int[Tensor, "batch"]
    ) -> Float[Tensor, "batch"]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "formula": self.formula}


class ToxicLogMass(Metric):
    name = "toxic_log_mass"
    formula = "m = log(sum_{t in T} softmax(logits[-1])_t) = logsumexp(log_softmax(logits[-1])[T])"

    def __init__(self, token_ids: list[int] | Tensor, token_set_info: dict[str, Any] | None = None) -> None:
        ids = torch.as_tensor(token_ids, dtype=torch.long)
        if ids.ndim != 1 or ids.numel() == 0:
            raise ToxlensError(f"toxic token ids must be a non-empty 1-D list, got shape {tuple(ids.shape)}")
        self.ids = ids
        self.info = token_set_info or {"n_tokens": int(ids.numel())}

    def __call__(
        self, logits: Float[Tensor, "batch d_vocab"], pair_index: Int[Tensor, "batch"]
    ) -> Float[Tensor, "batch"]:
        if int(self.ids.max()) >= logits.shape[-1]:
            raise ToxlensError(
                f"toxic token id {int(self.ids.max())} outside the vocabulary of size {logits.shape[-1]}"
            )
        logp = torch.log_softmax(logits.float(), dim=-1)
        return torch.logsumexp(logp[:, self.ids.to(logits.device)], dim=-1)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "toxic_tokens": self.info}


class LogitDiff(Metric):
    name = "logit_diff"
    formula = "m_i = logits[-1][toxic_target_i] - logits[-1][benign_target_i]"

    def __init__(self, toxic_targets: list[int] | Tensor, benign_targets: list[int] | Tensor) -> None:
        self.toxic = torch.as_tensor(toxic_targets, dtype=torch.long)
        self.benign = torch.as_tensor(benign_targets, dtype=torch.long)
        if self.toxic.shape != self.benign.shape or self.toxic.ndim != 1:
            raise ToxlensError(
                f"need one toxic and one benign target per pair, got shapes {tuple(self.toxic.shape)} "
                f"and {tuple(self.benign.shape)}"
            )

    def __call__(
        self, logits: Float[Tensor, "batch d_vocab"], pair_index: Int[Tensor, "batch"]
    ) -> Float[Tensor, "batch"]:
        idx = pair_index.to(self.toxic.device)
        rows = torch.arange(logits.shape[0], device=logits.device)
        t, b = self.toxic[idx].to(logits.device), self.benign[idx].to(logits.device)
        return logits.float()[rows, t] - logits.float()[rows, b]


def logit_diff_from_pairs(pairs: Any, tokenizer: Any) -> LogitDiff:
    """Build a :class:`LogitDiff` from the pairs' ``toxic_target`` / ``benign_target`` fields."""
    tox: list[int] = []
    ben: list[int] = []
    for pair in pairs.pairs:
        for side, text in (("toxic_target", pair.toxic_target), ("benign_target", pair.benign_target)):
            if text is None:
                raise ToxlensError(f"{pairs.source}, line {pair.line}: logit_diff needs a {side!r} field")
            ids = tokenizer.encode(text, add_special_tokens=False)
            if len(ids) != 1:
                raise ToxlensError(
                    f"{pairs.source}, line {pair.line}: {side} {text!r} is {len(ids)} tokens, expected exactly 1"
                )
            (tox if side == "toxic_target" else ben).append(ids[0])
    return LogitDiff(tox, ben)
