"""Token-weighted perplexity against the untouched Hugging Face model's own ``labels=`` loss."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from lens.errors import ToxlensError
from lens.hooks import attach, mlp_out_name
from lens.model import LensModel
from lens.perplexity import perplexity

# Lengths 1, 2, 3, 3, 4, 6, 6 words: several length groups, two groups with two texts each.
TEXTS = [
    "cat",
    "the dog",
    "you are red",
    "my friend is",
    "what a jerk it",
    "one two three four five six",
    "the sun and the moon so",
]


def hf_nll(ref: Any, ids: list[int]) -> tuple[float, int]:
    """(summed NLL, predicted tokens) from HF's mean ``labels=`` loss × number of predicted tokens."""
    if len(ids) < 2:
        return 0.0, 0
    t = torch.tensor([ids])
    with torch.no_grad():
        loss = ref(input_ids=t, labels=t).loss
    return float(loss) * (len(ids) - 1), len(ids) - 1


def reference(
    ref: Any, model: LensModel, texts: list[str], bos: bool, limit: int = 10**9
) -> tuple[float, int]:
    tok = model.tokenizer
    total, count = 0.0, 0
    for text in texts:
        ids = list(tok(text)["input_ids"])
        ids = ([tok.bos_token_id] if bos else []) + ids
        nll, n = hf_nll(ref, ids[:limit])
        total, count = total + nll, count + n
    return total, count


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("bos", [True, False])
def test_matches_hf_labels_loss(
    tiny_pair: Callable[..., tuple[LensModel, Any]], kind: str, bos: bool
) -> None:
    model, ref = tiny_pair(kind)
    out = perplexity(model, TEXTS, batch_size=16, prepend_bos=bos)
    nll, n = reference(ref, model, TEXTS, bos)
    assert n == sum(len(t.split()) - (0 if bos else 1) for t in TEXTS)
    assert out["n_tokens"] == n and out["n_texts"] == len(TEXTS) and out["prepend_bos"] is bos
    assert out["nll_sum"] == pytest.approx(nll, rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert out["n_truncated"] == 0 and out["max_tokens"] == model.info.n_ctx
    # batching never changes the value (no padding; each text on its own)
    for batch_size in (1, 2):
        other = perplexity(model, TEXTS, batch_size=batch_size, prepend_bos=bos)
        assert other["nll_sum"] == pytest.approx(out["nll_sum"], rel=1e-6)
        assert other["n_tokens"] == out["n_tokens"]


def test_token_weighted_not_text_weighted(tiny_pair: Callable[..., tuple[LensModel, Any]]) -> None:
    model, ref = tiny_pair("gpt2")
    short, long = "the dog", "one two three four five six"
    both = perplexity(model, [short, long])
    (a_nll, a_n), (b_nll, b_n) = (reference(ref, model, [t], True) for t in (short, long))
    assert both["perplexity"] == pytest.approx(math.exp((a_nll + b_nll) / (a_n + b_n)), rel=1e-5)
    mean_of_ppl = (math.exp(a_nll / a_n) + math.exp(b_nll / b_n)) / 2
    assert abs(both["perplexity"] - mean_of_ppl) > 1e-3 * both["perplexity"]


def test_truncation(tiny_pair: Callable[..., tuple[LensModel, Any]]) -> None:
    model, ref = tiny_pair("llama")
    out = perplexity(model, TEXTS, prepend_bos=True, max_tokens=3)
    nll, n = reference(ref, model, TEXTS, True, limit=3)
    assert out["n_tokens"] == n == 1 + 2 * (len(TEXTS) - 1)
    assert out["nll_sum"] == pytest.approx(nll, rel=1e-5)
    assert out["n_truncated"] == 5 and out["max_tokens"] == 3


def test_active_hooks_apply(tiny_pair: Callable[..., tuple[LensModel, Any]]) -> None:
    """What is attached to the model counts: zeroing MLP 0 through a hook equals the HF model with
    its first MLP's output zeroed."""
    model, ref = tiny_pair("gpt2")
    plain = perplexity(model, TEXTS)

    def zero(act: Tensor) -> Tensor:
        return torch.zeros_like(act)

    with attach(model.bridge, [(mlp_out_name(0), zero)]):
        edited = perplexity(model, TEXTS)
    handle = ref.transformer.h[0].mlp.register_forward_hook(lambda _m, _a, out: torch.zeros_like(out))
    try:
        nll, _ = reference(ref, model, TEXTS, True)
    finally:
        handle.remove()
    assert edited["nll_sum"] == pytest.approx(nll, rel=1e-5)
    assert abs(edited["nll_sum"] - plain["nll_sum"]) > 1e-3 * plain["nll_sum"]
    assert perplexity(model, TEXTS)["nll_sum"] == pytest.approx(plain["nll_sum"], rel=1e-7)  # detached


def test_errors(tiny_pair: Callable[..., tuple[LensModel, Any]]) -> None:
    model, _ = tiny_pair("gpt2")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"texts": []}, "at least one text"),
        ({"texts": "the dog"}, "single string"),
        ({"texts": ["the dog", ""]}, r"text 1 \(''\) has no tokens"),
        ({"texts": ["   "]}, "text 0"),
        ({"texts": ["the dog", 3]}, "text 1 is a int"),
        ({"texts": ["cat", "dog"], "prepend_bos": False}, "none of the 2 texts has a token to predict"),
        ({"texts": ["the dog"], "batch_size": 0}, "batch_size"),
        ({"texts": ["the dog"], "max_tokens": 1}, "max_tokens"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ToxlensError, match=match):
            perplexity(model, **kwargs)
    assert perplexity(model, ["cat", "dog"], prepend_bos=True)["n_tokens"] == 2


def test_no_bos_tokenizer(tiny_pair: Callable[..., tuple[LensModel, Any]]) -> None:
    model, ref = tiny_pair("gpt2")
    model.tokenizer.bos_token = None
    assert model.tokenizer.bos_token_id is None
    with pytest.raises(ToxlensError, match="no BOS token"):
        perplexity(model, TEXTS)
    out = perplexity(model, TEXTS, prepend_bos=False)
    assert out["nll_sum"] == pytest.approx(reference(ref, model, TEXTS, False)[0], rel=1e-5)
