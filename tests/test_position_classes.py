"""Position-resolved component scores (target ``components_by_class``) against the raw-HF reference: each
head/MLP patched at a pair's ``diff`` positions, its ``after`` positions or its ``final`` position only."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from reference import Acts, Cell, final_logits, hooked, patcher, recorders, toxic_log_mass
from tiny import TOXIC_WORDS, tiny

from lens.metrics import ToxicLogMass
from lens.model import LensModel
from lens.prompts import ContrastPairs, parse_pairs
from patching.activation import activation_patching
from patching.targets import POSITION_CLASSES, position_classes

# first difference at 0 (and again at 3), in the middle, at the last position; mixed lengths
PAIRS = [
    ("idiot is a jerk dog", "friend is a pal dog"),
    ("what a jerk you are", "what a pal you are"),
    ("you are my idiot", "you are my friend"),
    ("he is so jerk and she", "he is so pal and he"),
]


def load(lm: LensModel, texts: list[tuple[str, str]]) -> ContrastPairs:
    return parse_pairs([json.dumps({"toxic": t, "benign": b}) for t, b in texts], lm)


def test_position_classes() -> None:
    assert position_classes([1, 2, 3, 4, 5], [1, 9, 3, 9, 5]) == {
        "diff": (1, 3),
        "after": (2,),
        "final": (4,),
    }
    assert position_classes([1, 2, 3], [1, 2, 9]) == {"diff": (2,), "after": (), "final": ()}
    assert position_classes([1, 2], [1, 2]) == {"diff": (), "after": (), "final": ()}


@torch.no_grad()
def reference(hf: Any, pairs: ContrastPairs, ids: list[int], n_layers: int, n_heads: int) -> torch.Tensor:
    cells = []
    for layer in range(n_layers):
        cells += [("head", layer, h) for h in range(n_heads)] + [("mlp", layer, None)]
    out = torch.empty(len(pairs), len(cells), len(POSITION_CLASSES), dtype=torch.float64)
    for i, p in enumerate(pairs.pairs):
        acts: Acts = {}
        with hooked(recorders(hf, acts, detach=True)):
            final_logits(hf, p.toxic_ids)
        classes = position_classes(p.toxic_ids, p.benign_ids)
        for c, (site, layer, head) in enumerate(cells):
            for k, cls in enumerate(POSITION_CLASSES):
                cell = Cell(site, layer, head, classes[cls])
                source = acts["z" if site == "head" else "mlp", layer]
                with hooked([patcher(hf, cell, source)]):
                    out[i, c, k] = toxic_log_mass(final_logits(hf, p.benign_ids), ids)[0]
    return out


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_components_by_class_equals_reference(tmp_path: Any, kind: str) -> None:
    lm, ref = tiny(kind, tmp_path)
    ids = [int(lm.tokenizer.convert_tokens_to_ids(w)) for w in TOXIC_WORDS]
    metric = ToxicLogMass(ids)
    pairs = load(lm, PAIRS)
    expected = reference(ref, pairs, ids, lm.n_layers, lm.n_heads)
    for batch_size in (1, 1000):
        result = activation_patching(
            lm, pairs, metric, "components_by_class", batch_size=batch_size, progress=False
        )
        assert result.dims == ("component", "position")
        assert result.coords["position"] == ["diff", "after", "final"]
        assert result.names()[:3] == ["L0H0@diff", "L0H0@after", "L0H0@final"]
        torch.testing.assert_close(result.patched.double(), expected, atol=1e-4, rtol=0)
    effect = (expected - result.m_benign.double().view(-1, 1, 1)).abs()
    assert float(effect[:, :, 0].max()) > 1e-2 and float(effect[:, :, 1].max()) > 1e-2
    assert float(effect[:2, :, 2].max()) > 1e-2  # pairs 0 and 1: the last position is no diff position
    assert float(effect[2:, :, 2].max()) < 1e-6  # pairs 2 and 3 differ at their last position: no final class


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_last_position_difference_is_all_diff(tmp_path: Any, kind: str) -> None:
    """A pair differing only at its last position: every component's whole score is ``diff``."""
    lm, _ = tiny(kind, tmp_path)
    metric = ToxicLogMass([int(lm.tokenizer.convert_tokens_to_ids(w)) for w in TOXIC_WORDS])
    pairs = load(lm, [("you are my idiot", "you are my friend")])
    by_class = activation_patching(lm, pairs, metric, "components_by_class", progress=False)
    whole = activation_patching(lm, pairs, metric, "components", progress=False)
    torch.testing.assert_close(by_class.mean[:, 0], whole.mean, atol=1e-5, rtol=0)
    assert torch.equal(by_class.mean[:, 1:], torch.zeros_like(by_class.mean[:, 1:]))
    assert float(whole.mean.abs().max()) > 1e-2
