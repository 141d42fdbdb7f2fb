"""Prefix sharing + staircase batching (``patching/prefix.py``, ``patching/staircase.py``) against the
independent raw-HF reference (``tests/reference.py``): pairs whose first difference is at position 0, in the
middle and at the last position, mixed lengths, every target, batch sizes 1 / 3 / large, no hooks left."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch
from reference import activation_reference
from tiny import TOXIC_WORDS, tiny
from torch import Tensor

from lens.hooks import count_hooks
from lens.metrics import ToxicLogMass
from lens.model import LensModel
from lens.prompts import ContrastPairs, parse_pairs
from patching.activation import activation_patching, residuals_by_layer
from patching.prefix import first_difference, prefix_kv, prepare_suffix
from patching.staircase import Full, GroupInputs, Row, by_first_difference, group_inputs, run_chunk

KINDS = ["gpt2", "llama"]
ATOL = 1e-4
# One length (5 tokens), first difference at 0, 2 (two pairs, the second also differs later) and 4 (last).
SAME_LENGTH = [
    ("idiot is a very dog", "friend is a very dog"),
    ("you are jerk and cat", "you are pal and cat"),
    ("you are a very idiot", "you are a very friend"),
    ("he is idiot so red", "he is friend so jerk"),
]
# Lengths 2, 5, 4, 2, 5: first differences 0, 2, 3 (last), 1 (last), 4 (last).
MIXED = [
    ("idiot cat", "friend cat"),
    ("what a jerk you are", "what a pal you are"),
    ("you are my idiot", "you are my friend"),
    ("you jerk", "you pal"),
    ("he is so very jerk", "he is so very pal"),
]


def load(lm: LensModel, texts: list[tuple[str, str]]) -> ContrastPairs:
    return parse_pairs([json.dumps({"toxic": t, "benign": b}) for t, b in texts], lm)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[LensModel, Any]]:
    cache: dict[str, tuple[LensModel, Any]] = {}

    def get(kind: str) -> tuple[LensModel, Any]:
        if kind not in cache:
            lm, ref = tiny(kind, tmp_path_factory.mktemp(f"stair-{kind}"))
            with torch.no_grad():  # the bridge wires its own capture hooks on first use
                lm.bridge(torch.tensor([[1, 5, 6]]))
            cache[kind] = (lm, ref)
        return cache[kind]

    return get


def test_first_difference() -> None:
    assert first_difference([1, 2, 3], [4, 2, 3]) == 0
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2, 3], [1, 2, 7]) == 2
    assert first_difference([1, 2, 3], [1, 2, 3]) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_groups_cover_first_middle_and_last(models: Any, kind: str) -> None:
    lm, _ = models(kind)
    same = load(lm, SAME_LENGTH)
    (idx,) = same.length_groups().values()
    assert by_first_difference(same, idx) == {0: [0], 2: [1, 3], 4: [2]}
    mixed = load(lm, MIXED)
    ds = {length: by_first_difference(mixed, idx) for length, idx in mixed.length_groups().items()}
    assert ds == {2: {0: [0], 1: [1]}, 5: {2: [0], 4: [1]}, 4: {3: [0]}}


@pytest.mark.parametrize("target", ["components", "heads", "mlps", "resid_by_pos", "heads_by_pos"])
@pytest.mark.parametrize("kind", KINDS)
def test_equals_reference_all_targets_and_batch_sizes(models: Any, kind: str, target: str) -> None:
    lm, ref = models(kind)
    texts = SAME_LENGTH if target.endswith("_by_pos") else MIXED
    pairs = load(lm, texts)
    metric = ToxicLogMass([int(lm.tokenizer.convert_tokens_to_ids(w)) for w in TOXIC_WORDS])
    raw = [(list(p.toxic_ids), list(p.benign_ids)) for p in pairs.pairs]
    expected = activation_reference(ref, raw, metric.ids.tolist(), target)
    spread = (expected.patched - expected.m_benign.view((-1,) + (1,) * (expected.patched.ndim - 1))).abs()
    assert float(spread.max()) > 1e-2  # real effects
    for batch_size in (1, 3, 100_000):
        hooks0 = count_hooks(lm.bridge)
        result = activation_patching(lm, pairs, metric, target, batch_size=batch_size, progress=False)
        assert count_hooks(lm.bridge) == hooks0
        assert result.names() == expected.names
        assert result.metadata["batch_size"] == batch_size and "staircase" in result.metadata["speed_scheme"]
        torch.testing.assert_close(result.m_toxic.double(), expected.m_toxic, atol=ATOL, rtol=0)
        torch.testing.assert_close(result.m_benign.double(), expected.m_benign, atol=ATOL, rtol=0)
        torch.testing.assert_close(result.patched.double(), expected.patched, atol=ATOL, rtol=0)
        torch.testing.assert_close(result.mean.double(), expected.mean, atol=ATOL, rtol=0)


def _group(lm: LensModel, pairs: ContrastPairs, d: int) -> tuple[GroupInputs, Tensor, list[int]]:
    (idx,) = pairs.length_groups().values()
    local = by_first_difference(pairs, idx)[d]
    tokens = pairs.tokens(idx, "benign")
    prepared = lm.prepare(tokens)
    resid, final = residuals_by_layer(lm, prepared)
    full = Full(prepared, tokens, resid, {}, resid)  # toxic := benign: every patch is a no-op
    return group_inputs(lm, full, local, d), final, local


@pytest.mark.parametrize("kind", KINDS)
def test_suffix_forward_reproduces_full_forward_and_keeps_prefix(models: Any, kind: str) -> None:
    """An unpatched suffix forward after the cached prefix equals the full forward at those positions,
    and the prefix keys/values are the same tensors, unchanged, after several forwards."""
    lm, _ = models(kind)
    pairs = load(lm, SAME_LENGTH)
    with torch.no_grad():
        g, final, local = _group(lm, pairs, 2)
        assert g.kv is not None and g.kv.d == 2 and g.suffix_len == 3
        keys = [k.clone() for k in g.kv.keys]
        rows = [
            Row(a, layer, "resid_pre", f"blocks.{layer}.hook_resid_pre", None, ())
            for a in (0, 1)
            for layer in range(lm.n_layers)
        ]
        for _ in range(2):
            out = run_chunk(lm, g, sorted(rows, key=lambda r: r.layer))
            for r, row in enumerate(sorted(rows, key=lambda r: r.layer)):
                torch.testing.assert_close(out[r], final[local[row.pair], 2:], atol=1e-5, rtol=0)
        for k0, k1 in zip(keys, g.kv.keys):
            assert torch.equal(k0, k1)


@pytest.mark.parametrize("kind", KINDS)
def test_prepare_suffix_positions(models: Any, kind: str) -> None:
    lm, _ = models(kind)
    tokens = torch.tensor([[1, 5, 6, 7, 8]])
    kv = prefix_kv(lm, tokens[:, :3])
    prepared, placeholder = prepare_suffix(lm, tokens, kv)
    assert prepared.resid.shape[1] == 2
    assert torch.equal(prepared.kwargs["position_ids"].flatten().cpu(), torch.tensor([3, 4]))
    assert any(a is placeholder for a in (*prepared.args, *prepared.kwargs.values()))
