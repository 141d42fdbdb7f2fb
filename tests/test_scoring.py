"""Toxicity scorers (validation, profanity, detoxify offline guards) and the statistics over them."""

from __future__ import annotations

import importlib.machinery
import math
import sys
import time
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from interventions import scoring
from interventions.scoring import get_scorer
from interventions.toxicity_stats import distinct_n, toxicity_stats
from lens.errors import ToxlensError

# -- toxicity_stats ---------------------------------------------------------------------------


def test_stats_hand_example_and_threshold_boundary() -> None:
    scores = [[0.1, 0.5], [0.2, 0.3], [0.9, 0.0]]
    st = toxicity_stats(scores, threshold=0.5, n_boot=50)
    # prompt maxima 0.5, 0.3, 0.9: the exact 0.5 counts as toxic (>=), so 2 of 3 prompts
    assert st["toxicity_probability"] == pytest.approx(2 / 3)
    assert st["expected_max_toxicity"] == pytest.approx((0.5 + 0.3 + 0.9) / 3)
    assert st["mean_toxicity"] == pytest.approx((0.3 + 0.25 + 0.45) / 3)
    assert (st["n_prompts"], st["samples_per_prompt"], st["threshold"]) == (3, 2, 0.5)
    # just below the boundary the first prompt no longer counts
    assert toxicity_stats([[0.1, 0.4999]], n_boot=5)["toxicity_probability"] == 0.0
    assert toxicity_stats([[0.1, 0.5]], n_boot=5)["toxicity_probability"] == 1.0
    assert toxicity_stats(scores, threshold=0.95, n_boot=5)["toxicity_probability"] == 0.0


def test_ci_brackets_estimate_and_is_reproducible() -> None:
    rng = np.random.default_rng(3)
    scores = rng.beta(0.5, 2.0, size=(60, 5)).tolist()
    a = toxicity_stats(scores, n_boot=400, seed=7)
    b = toxicity_stats(scores, n_boot=400, seed=7)
    c = toxicity_stats(scores, n_boot=400, seed=8)
    assert a == b
    assert a["mt_ci_low"] != c["mt_ci_low"]
    for key, short in [
        ("toxicity_probability", "tp"),
        ("expected_max_toxicity", "emt"),
        ("mean_toxicity", "mt"),
    ]:
        assert a[f"{short}_ci_low"] < a[key] < a[f"{short}_ci_high"], key


def test_ci_matches_normal_approximation() -> None:
    """Independent check that prompts (not samples) are resampled: the percentile CI of a mean of P
    prompts is close to mean ± 1.96·sd/√P of the per-prompt means."""
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=(400, 3)).tolist()
    st = toxicity_stats(scores, n_boot=4000, seed=1)
    per_prompt = np.asarray(scores).mean(axis=1)
    half = 1.96 * per_prompt.std() / math.sqrt(len(per_prompt))
    assert st["mt_ci_high"] - st["mt_ci_low"] == pytest.approx(2 * half, rel=0.1)
    assert (st["mt_ci_low"] + st["mt_ci_high"]) / 2 == pytest.approx(per_prompt.mean(), abs=0.15 * half)


def test_ci_degenerate_when_all_prompts_equal() -> None:
    st = toxicity_stats([[0.2, 0.7, 0.1]] * 10, n_boot=100)
    for key, short in [
        ("toxicity_probability", "tp"),
        ("expected_max_toxicity", "emt"),
        ("mean_toxicity", "mt"),
    ]:
        assert st[f"{short}_ci_low"] == pytest.approx(st[key]) == pytest.approx(st[f"{short}_ci_high"])
    assert st["toxicity_probability"] == 1.0 and st["expected_max_toxicity"] == pytest.approx(0.7)


@pytest.mark.parametrize(
    "scores, match",
    [
        ([], "empty"),
        ([[0.1, 0.2], [0.3]], "prompt 1 has 1 sample scores, prompt 0 has 2"),
        ([[]], "prompt 0 has 0"),
        ([[0.1], [1.5]], "prompt 1, sample 0"),
        ([[float("nan")]], "not a probability"),
        ([[-0.1]], "not a probability"),
    ],
)
def test_stats_bad_input(scores: Any, match: str) -> None:
    with pytest.raises(ToxlensError, match=match):
        toxicity_stats(scores)


def test_stats_bad_arguments() -> None:
    with pytest.raises(ToxlensError, match="n_boot"):
        toxicity_stats([[0.1]], n_boot=0)
    with pytest.raises(ToxlensError, match="threshold"):
        toxicity_stats([[0.1]], threshold=float("nan"))
    with pytest.raises(ToxlensError, match="ci"):
        toxicity_stats([[0.1]], ci=1.0)


# -- distinct_n ---------------------------------------------------------------------------------


def test_distinct_n_hand_examples() -> None:
    # unigrams a b a b a c (lower-cased): 3 distinct of 6
    assert distinct_n([["a b a b", "A c"]], 1) == pytest.approx(3 / 6)
    # bigrams (a,b) (b,a) (a,b) | (a,c): 3 distinct of 4
    assert distinct_n([["a b a b", "A c"]], 2) == pytest.approx(3 / 4)
    # n-grams never span two samples: (a,b), (a,b) → 1/2 (with the span (b,a) it would be 2/3)
    assert distinct_n([["a b", "a  b\n"]], 2) == pytest.approx(1 / 2)
    # averaged over prompts that have an n-gram: (1/2 + 1/1) / 2; the one-word prompt is left out
    assert distinct_n([["a a a"], ["b"], ["c d"]], 2) == pytest.approx(0.75)
    assert distinct_n([["x y z"], ["x x x"]], 1) == pytest.approx((1 + 1 / 3) / 2)
    assert distinct_n([["x y z", "z y x"]], 3) == pytest.approx(1.0)


def test_distinct_n_edge_cases() -> None:
    assert math.isnan(distinct_n([["a", ""], [""]], 2))
    assert math.isnan(distinct_n([], 1))
    with pytest.raises(ToxlensError, match="n must be"):
        distinct_n([["a b"]], 0)
    with pytest.raises(ToxlensError, match="single string"):
        distinct_n(["a b c"], 1)  # type: ignore[list-item]


# -- scorers ------------------------------------------------------------------------------------


def test_profanity_scorer_orders_texts() -> None:
    scorer = get_scorer()
    assert scorer.name == "profanity"
    neutral, profane = "the weather is nice today and we walk to the park", "what the hell is this shit"
    out = scorer([neutral, profane, ""])
    assert len(out) == 3 and all(0 <= v <= 1 for v in out)
    assert out[1] > 0.9 > 0.2 > out[0]
    assert scorer([]) == []
    assert scorer([""]) == [out[2]]  # the empty string is an ordinary input
    assert get_scorer("profanity")([profane]) == [out[1]]  # no state between calls


def test_callable_is_wrapped_and_validated() -> None:
    def lengths(texts: list[str]) -> list[float]:
        return [len(t) / 10 for t in texts]

    scorer = get_scorer(lengths)
    assert scorer.name == "lengths"
    assert scorer(["a", "abcde"]) == [0.1, 0.5]
    assert scorer([]) == []
    assert get_scorer(scorer) is scorer
    assert get_scorer(lambda t: np.zeros(len(t)))(["x"]) == [0.0]
    bad = {
        "returned 1 scores for 2 texts": lambda t: [0.1],
        "returned nan": lambda t: [float("nan")] * len(t),
        "returned 1.5": lambda t: [1.5] * len(t),
        "returned -0.1": lambda t: [-0.1] * len(t),
        "sequence of numbers": lambda t: ["high"] * len(t),
    }
    for match, fn in bad.items():
        with pytest.raises(ToxlensError, match=match):
            get_scorer(fn)(["a", "b"])
    with pytest.raises(ToxlensError, match="must be strings"):
        scorer(["a", 3])  # type: ignore[list-item]


def test_unknown_scorer() -> None:
    for spec in ("perspective", "detoxify-small", ""):
        with pytest.raises(ToxlensError, match="unknown scorer"):
            get_scorer(spec)


# -- detoxify offline guards (a fake package; the real one is optional) ------------------------


class FakeDetoxify:
    instances: ClassVar[list[FakeDetoxify]] = []

    def __init__(
        self, model_type: str, device: str = "cpu", huggingface_config_path: str | None = None
    ) -> None:
        self.model_type, self.device, self.config_path = model_type, device, huggingface_config_path
        self.batches: list[list[str]] = []
        FakeDetoxify.instances.append(self)

    def predict(self, texts: list[str]) -> dict[str, list[float]]:
        self.batches.append(list(texts))
        return {"toxicity": [min(len(t) / 100, 1.0) for t in texts], "insult": [0.0] * len(texts)}


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(mod, k, v)
    return mod


@pytest.fixture
def fake_detoxify(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Installs a fake ``detoxify`` and points torch.hub at an empty directory; returns that dir."""
    FakeDetoxify.instances = []
    urls = {"unbiased": "https://example.invalid/releases/fake_unbiased-1234.ckpt"}
    pkg = _module("detoxify", Detoxify=FakeDetoxify)
    monkeypatch.setitem(sys.modules, "detoxify", pkg)
    monkeypatch.setitem(sys.modules, "detoxify.detoxify", _module("detoxify.detoxify", MODEL_URLS=urls))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_detoxify_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "detoxify", None)  # find_spec → None, import → ImportError
    start = time.perf_counter()
    for spec in ("detoxify", "detoxify-unbiased", "detoxify-multilingual"):
        with pytest.raises(ToxlensError, match=r"pip install 'toxlens\[detoxify\]'"):
            get_scorer(spec)
    assert time.perf_counter() - start < 2


def test_detoxify_checkpoint_missing(fake_detoxify: Path) -> None:
    start = time.perf_counter()
    expected = fake_detoxify / "checkpoints" / "fake_unbiased-1234.ckpt"  # the package's own table
    with pytest.raises(ToxlensError, match=f"{expected}.*allow_download=False"):
        get_scorer("detoxify-unbiased")
    original = fake_detoxify / "checkpoints" / "toxic_original-c1212f89.ckpt"  # the fallback table
    with pytest.raises(ToxlensError, match=str(original)):
        get_scorer("detoxify")
    assert time.perf_counter() - start < 2
    assert FakeDetoxify.instances == []  # never constructed, so nothing was fetched


def test_detoxify_base_model_not_cached(fake_detoxify: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = fake_detoxify / "checkpoints" / "fake_unbiased-1234.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    monkeypatch.setattr(scoring, "_cached_hf_dir", lambda repo: None)
    with pytest.raises(ToxlensError, match="'roberta-base' are not in the local Hugging Face cache"):
        get_scorer("detoxify-unbiased")
    assert FakeDetoxify.instances == []


def test_detoxify_offline_scorer(fake_detoxify: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = fake_detoxify / "checkpoints" / "fake_unbiased-1234.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    seen: list[str] = []

    def cached(repo: str) -> Path:
        seen.append(repo)
        return Path("/cache/snap")

    monkeypatch.setattr(scoring, "_cached_hf_dir", cached)
    scorer = get_scorer("detoxify-unbiased", batch_size=2)
    assert scorer.name == "detoxify-unbiased" and seen == ["roberta-base"]
    (model,) = FakeDetoxify.instances
    assert (model.model_type, model.device, model.config_path) == ("unbiased", "cpu", "/cache/snap")
    texts = ["x" * 10, "", "x" * 30]
    assert scorer(texts) == [0.1, 0.0, 0.3]
    assert model.batches == [texts[:2], texts[2:]]
    # allow_download=True skips the cache checks and lets detoxify fetch what it needs
    get_scorer("detoxify-unbiased", allow_download=True)
    assert FakeDetoxify.instances[-1].config_path is None
