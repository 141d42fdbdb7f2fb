"""An independent reference for patching several components together (tests only).

Raw Hugging Face model, plain ``torch`` hooks from :mod:`reference` (each removed in ``finally``), one
full forward per (pair, set): every component of the set is patched at once by its own hook.

``into_benign[i, s] = m(benign_i with set s from toxic_i)``,
``into_toxic[i, s] = m(toxic_i with set s from benign_i)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from reference import Acts, Cell, final_logits, hooked, patcher, recorders, toxic_log_mass
from torch import Tensor


def cell(name: str) -> Cell:
    layer, _, rest = name[1:].partition("H")
    if rest:
        return Cell("head", int(layer), int(rest))
    return Cell("mlp", int(name[1:].split(".")[0]))


def _key(c: Cell) -> tuple[str, int]:
    return ("z" if c.site == "head" else c.site), c.layer


@torch.no_grad()
def set_reference(
    hf: Any,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    token_ids: Sequence[int],
    sets: list[list[str]],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(into_benign [pair, set], into_toxic [pair, set], m_toxic, m_benign)`` in float64."""
    into_benign = torch.empty(len(pairs), len(sets), dtype=torch.float64)
    into_toxic = torch.empty(len(pairs), len(sets), dtype=torch.float64)
    m_toxic = torch.empty(len(pairs), dtype=torch.float64)
    m_benign = torch.empty(len(pairs), dtype=torch.float64)
    for i, (toxic, benign) in enumerate(pairs):
        tox: Acts = {}
        ben: Acts = {}
        with hooked(recorders(hf, tox, detach=True)):
            m_toxic[i] = toxic_log_mass(final_logits(hf, toxic), token_ids)[0]
        with hooked(recorders(hf, ben, detach=True)):
            m_benign[i] = toxic_log_mass(final_logits(hf, benign), token_ids)[0]
        for j, names in enumerate(sets):
            cells = [cell(n) for n in names]
            with hooked([patcher(hf, c, tox[_key(c)]) for c in cells]):
                into_benign[i, j] = toxic_log_mass(final_logits(hf, benign), token_ids)[0]
            with hooked([patcher(hf, c, ben[_key(c)]) for c in cells]):
                into_toxic[i, j] = toxic_log_mass(final_logits(hf, toxic), token_ids)[0]
    return into_benign, into_toxic, m_toxic, m_benign
