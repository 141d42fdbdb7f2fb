"""toxlens's fast patching sweeps against an independent reference (``tests/reference.py``).

The reference uses the raw Hugging Face copy of each tiny model, plain torch hooks and one full forward
per (pair, cell); toxlens resumes from cached residuals through TransformerBridge hooks and batches many
patches per forward. Every number must agree.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from reference import RefResult, activation_reference, attribution_reference
from tiny import TOXIC_WORDS, hf_model, make_tokenizer, tiny

from lens.loading import from_hf
from lens.metrics import ToxicLogMass
from lens.model import LensModel
from lens.prompts import ContrastPairs, parse_pairs
from patching.activation import activation_patching
from patching.attribution import attribution_patching
from patching.result import PatchResult

KINDS = ["gpt2", "llama"]
ALL_POSITIONS = ["components", "heads", "mlps"]
POSITIONAL = ["resid_by_pos", "heads_by_pos"]
ATOL = 1e-4

# One length (5 tokens): for the single-position targets.
SAME_LENGTH = [
    ("you are a very idiot", "you are a really friend"),
    ("he is so jerk and", "he was so pal and"),
    ("what a jerk you are", "what a pal you are"),
]
# Lengths 4, 6, 2, 5, 2 (two pairs share length 2; file order is not length order): length grouping.
# (All pairs, in both tiny models, have |m(toxic) - m(benign)| > 0.05, so per-pair scores are stable.)
MIXED_LENGTHS = [
    ("you are my idiot", "you are my friend"),
    ("he is a idiot and she", "he is a pal and she"),
    ("idiot cat", "friend cat"),
    ("what a jerk you are", "what a pal you are"),
    ("you jerk", "you pal"),
]
# Differ in the marker word only (one position each), for the first-order test.
MARKER_ONLY = [
    ("you are a very idiot", "you are a very friend"),
    ("he is so jerk and", "he is so pal and"),
    ("my idiot dog is red", "my friend dog is red"),
]


def jsonl(pairs: list[tuple[str, str]]) -> list[str]:
    return [json.dumps({"toxic": t, "benign": b}) for t, b in pairs]


def token_ids(tokenizer: Any) -> list[int]:
    return [int(tokenizer.convert_tokens_to_ids(w)) for w in TOXIC_WORDS]


def raw_pairs(tokenizer: Any, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """Tokenized straight with the HF tokenizer (not through toxlens)."""
    return [(tokenizer(t)["input_ids"], tokenizer(b)["input_ids"]) for t, b in pairs]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[LensModel, Any]]:
    cache: dict[str, tuple[LensModel, Any]] = {}

    def get(kind: str) -> tuple[LensModel, Any]:
        if kind not in cache:
            cache[kind] = tiny(kind, tmp_path_factory.mktemp(f"ref-{kind}"))
        return cache[kind]

    return get


def prepare_case(models: Callable[[str], tuple[LensModel, Any]], kind: str, target: str) -> tuple[Any, ...]:
    lm, ref = models(kind)
    texts = SAME_LENGTH if target in POSITIONAL else MIXED_LENGTHS
    pairs = parse_pairs(jsonl(texts), lm)
    raw = raw_pairs(lm.tokenizer, texts)
    assert [(list(p.toxic_ids), list(p.benign_ids)) for p in pairs.pairs] == raw
    if target not in POSITIONAL:
        assert len(pairs.length_groups()) > 1
    return lm, ref, pairs, raw, ToxicLogMass(token_ids(lm.tokenizer))


def assert_matches(result: PatchResult, ref: RefResult, atol: float = ATOL) -> None:
    """Every stored and derived number of ``result`` equals the reference."""
    assert result.names() == ref.names
    assert tuple(result.patched.shape) == tuple(ref.patched.shape)
    # Per-pair normalisation divides by each pair's own difference: keep it well away from zero so
    # that 1e-4 is a meaningful tolerance for per_pair too.
    assert (ref.m_toxic - ref.m_benign).abs().min() > 0.05
    torch.testing.assert_close(result.m_toxic.double(), ref.m_toxic, atol=atol, rtol=0)
    torch.testing.assert_close(result.m_benign.double(), ref.m_benign, atol=atol, rtol=0)
    torch.testing.assert_close(result.patched.double(), ref.patched, atol=atol, rtol=0)
    torch.testing.assert_close(result.mean.double(), ref.mean, atol=atol, rtol=0)
    torch.testing.assert_close(result.per_pair.double(), ref.per_pair, atol=atol, rtol=0)


# -------------------------------------------------------------------------------------------------
# Activation patching


@pytest.mark.parametrize("target", ALL_POSITIONS + POSITIONAL)
@pytest.mark.parametrize("kind", KINDS)
def test_activation_patching_equals_reference(models: Any, kind: str, target: str) -> None:
    lm, ref, pairs, raw, metric = prepare_case(models, kind, target)
    result = activation_patching(lm, pairs, metric, target, progress=False)
    expected = activation_reference(ref, raw, metric.ids.tolist(), target)
    assert_matches(result, expected)
    # Not degenerate: the sweep found real, different effects.
    assert ref_spread(expected) > 1e-2
    # The reference removed every hook it added.
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in ref.modules()) == 0


def ref_spread(ref: RefResult) -> float:
    return float((ref.patched - ref.m_benign.view((-1,) + (1,) * (ref.patched.ndim - 1))).abs().max())


@pytest.mark.parametrize("kind", KINDS)
def test_batch_size_does_not_matter(models: Any, kind: str) -> None:
    lm, _ref, pairs_mixed, _, metric = prepare_case(models, kind, "components")
    _, _, pairs_same, _, _ = prepare_case(models, kind, "heads_by_pos")
    for target, pairs in (
        ("components", pairs_mixed),
        ("heads_by_pos", pairs_same),
        ("resid_by_pos", pairs_same),
    ):
        big = activation_patching(lm, pairs, metric, target, batch_size=64, progress=False)
        for batch_size in (1, 7):
            small = activation_patching(lm, pairs, metric, target, batch_size=batch_size, progress=False)
            torch.testing.assert_close(small.patched, big.patched, atol=1e-5, rtol=0)
            torch.testing.assert_close(small.m_toxic, big.m_toxic, atol=1e-5, rtol=0)
            torch.testing.assert_close(small.m_benign, big.m_benign, atol=1e-5, rtol=0)
            torch.testing.assert_close(small.mean, big.mean, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_pair_order_does_not_matter(models: Any, kind: str) -> None:
    lm, _ref, pairs, _, metric = prepare_case(models, kind, "components")
    order = list(range(len(MIXED_LENGTHS)))
    random.Random(1).shuffle(order)
    assert order != sorted(order)
    shuffled = parse_pairs(jsonl([MIXED_LENGTHS[i] for i in order]), lm)
    for method in (activation_patching, attribution_patching):
        a = method(lm, pairs, metric, "components", progress=False)
        b = method(lm, shuffled, metric, "components", progress=False)
        torch.testing.assert_close(b.patched, a.patched[order], atol=1e-5, rtol=0)
        torch.testing.assert_close(b.per_pair, a.per_pair[order], atol=1e-5, rtol=0)
        torch.testing.assert_close(b.m_toxic, a.m_toxic[order], atol=1e-5, rtol=0)
        torch.testing.assert_close(b.mean, a.mean, atol=1e-5, rtol=0)


# -------------------------------------------------------------------------------------------------
# Attribution patching


@pytest.mark.parametrize("target", ALL_POSITIONS + POSITIONAL)
@pytest.mark.parametrize("kind", KINDS)
def test_attribution_patching_equals_first_order_reference(models: Any, kind: str, target: str) -> None:
    lm, ref, pairs, raw, metric = prepare_case(models, kind, target)
    result = attribution_patching(lm, pairs, metric, target)
    expected = attribution_reference(ref, raw, metric.ids.tolist(), target)
    assert result.names() == expected.names
    view = (-1,) + (1,) * (expected.patched.ndim - 1)
    torch.testing.assert_close(
        (result.patched - result.m_benign.view(view)).double(),
        expected.patched - expected.m_benign.view(view),
        atol=ATOL,
        rtol=0,
    )
    assert_matches(result, expected)
    assert ref_spread(expected) > 1e-2


def near_identical_model(kind: str, tmp: Path, eps: float) -> LensModel:
    """The tiny model with the benign marker words' embeddings set to the toxic ones' plus ``eps`` noise,
    so toxic and benign prompts differ by an ``O(eps)`` input perturbation."""
    model = hf_model(kind)
    tok = make_tokenizer(tmp / "tok")
    emb = model.get_input_embeddings().weight
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for toxic, benign in (("idiot", "friend"), ("jerk", "pal")):
            t, b = tok.convert_tokens_to_ids(toxic), tok.convert_tokens_to_ids(benign)
            noise = torch.randn(emb.shape[1], generator=gen)
            emb[b] = emb[t] + eps * noise / noise.norm() * emb[t].norm()
    return from_hf(model, tok, f"near-{kind}")


@pytest.mark.parametrize("kind", KINDS)
def test_attribution_approaches_activation_for_small_differences(tmp_path: Path, kind: str) -> None:
    """First-order property: when benign is the toxic input plus an O(eps) perturbation, the attribution
    estimate of every cell equals the activation-patching effect up to O(eps^2), i.e. relative O(eps)."""
    eps = 1e-2
    lm = near_identical_model(kind, tmp_path, eps)
    metric = ToxicLogMass(token_ids(lm.tokenizer))
    pairs: ContrastPairs = parse_pairs(jsonl(MARKER_ONLY), lm)
    for target in ("components", "resid_by_pos", "heads_by_pos"):
        act = activation_patching(lm, pairs, metric, target, progress=False)
        att = attribution_patching(lm, pairs, metric, target)
        torch.testing.assert_close(att.m_toxic, act.m_toxic, atol=1e-5, rtol=0)
        torch.testing.assert_close(att.m_benign, act.m_benign, atol=1e-5, rtol=0)
        view = (-1,) + (1,) * len(act.dims)
        d_act = act.patched - act.m_benign.view(view)
        d_att = att.patched - att.m_benign.view(view)
        scale = float(d_act.abs().max())
        assert scale > 1e-4  # a real (small) effect
        err = float((d_att - d_act).abs().max())
        assert err <= 0.05 * scale, (target, err, scale)  # observed <= 0.013 at eps = 1e-2
        if target == "resid_by_pos":
            # Layer 0 at the differing position carries the whole difference, in both methods.
            torch.testing.assert_close(
                d_act[:, 0].abs().amax(-1), (act.m_toxic - act.m_benign).abs(), atol=1e-5, rtol=0
            )
