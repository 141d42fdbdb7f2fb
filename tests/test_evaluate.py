"""The evaluation harness on a tiny Llama: statistics recomputed by hand from the written samples,
same seeds across conditions, edits undone, perplexity against the untouched HF reference."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from tiny import TOXIC_WORDS, tiny

from interventions.conditions import CONDITIONS, Condition, build_conditions, top_components
from interventions.evaluate import SUMMARY_COLUMNS, evaluate
from interventions.policy import RollbackPolicy
from interventions.steering import Steer
from interventions.sweep import sweep_steering
from lens.errors import ToxlensError
from lens.model import LensModel
from lens.probe import Probe

PROMPTS = ["you are a", "the cat is very", "my dog and your", "she is"]
NEUTRAL = ["the sun is red", "my friend has a blue car", "we are at the house", "one two three four five"]


def marker_scorer(texts: list[str]) -> list[float]:
    """1 when a toxic marker word appears, else 0.1 per word of 'red' (gives non-trivial values)."""
    return [
        1.0 if any(w in t.split() for w in TOXIC_WORDS) else min(0.1 * t.split().count("red"), 0.4)
        for t in texts
    ]


@pytest.fixture()
def model(tmp_path: Path) -> tuple[LensModel, Any]:
    return tiny("llama", tmp_path, seed=3)


def planted_probe(m: LensModel) -> Probe:
    """Fires on the marker words: resid_pre of layer 0 is the token embedding."""
    emb = m.bridge.original_model.model.embed_tokens.weight.detach()
    ids = [m.tokenizer.convert_tokens_to_ids(w) for w in TOXIC_WORDS]
    w = emb[ids].mean(0)
    proj = emb @ w
    cut = float(proj[ids].min()) - 1e-3
    d = m.info.d_model
    return Probe(0, "resid_pre", "mean", w * 50, -50 * cut, torch.zeros(d), torch.ones(d))


def logits(m: LensModel) -> torch.Tensor:
    return m.bridge(torch.tensor([[5, 6, 7, 8]]), use_cache=False)


def test_statistics_match_the_samples(model: tuple[LensModel, Any], tmp_path: Path) -> None:
    m, _ = model
    k = 3
    res = evaluate(m, PROMPTS, [Condition("none")], samples=k, max_new_tokens=6, seed=5, scorer=marker_scorer)
    res.write(tmp_path / "ev")
    rows = [json.loads(line) for line in (tmp_path / "ev" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == len(PROMPTS) * k
    scores = np.array([r["score"] for r in rows]).reshape(len(PROMPTS), k)
    assert [r["score"] for r in rows] == marker_scorer([r["text"] for r in rows])
    row = pd.read_csv(tmp_path / "ev" / "summary.csv").iloc[0]
    assert row["toxicity_probability"] == pytest.approx(float((scores >= 0.5).any(1).mean()))
    assert row["expected_max_toxicity"] == pytest.approx(float(scores.max(1).mean()))
    assert row["mean_toxicity"] == pytest.approx(float(scores.mean()))
    assert row["tp_ci_low"] <= row["toxicity_probability"] <= row["tp_ci_high"]
    assert (
        list(pd.read_csv(tmp_path / "ev" / "summary.csv").columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    )
    assert [r["seed"] for r in rows] == [5 + i for i in range(len(rows))]


def test_same_seeds_across_conditions_and_edits_undone(model: tuple[LensModel, Any], tmp_path: Path) -> None:
    m, _ = model
    before = logits(m)
    probe = planted_probe(m)
    never = Probe(0, "resid_pre", "mean", probe.weight, -1e6, probe.mean, probe.std)
    v = torch.randn(m.info.d_model)
    conds = [
        Condition("none"),
        Condition("watch", monitor=never, threshold=0.5, policy=RollbackPolicy()),
        Condition("steer", steers=[Steer(v, 1, 3.0)]),
    ]
    res = evaluate(
        m, PROMPTS, conds, samples=2, max_new_tokens=6, scorer=marker_scorer, perplexity_texts=NEUTRAL
    )
    by = {c: [s["text"] for s in res.samples if s["condition"] == c] for c in ("none", "watch", "steer")}
    assert by["none"] == by["watch"]  # a monitor that never fires changes nothing
    assert by["none"] != by["steer"]
    assert torch.equal(logits(m), before)
    s = res.summary.set_index("condition")
    assert s.loc["none", "perplexity"] == s.loc["watch", "perplexity"]
    assert s.loc["none", "perplexity"] != s.loc["steer", "perplexity"]
    assert s.loc["watch", "rollbacks_per_sample"] == 0
    assert all("trace" in r for r in res.samples if r["condition"] == "watch")


def test_rollback_condition_removes_planted_words(model: tuple[LensModel, Any]) -> None:
    m, _ = model
    lm_head = m.bridge.original_model.lm_head.weight
    ids = [m.tokenizer.convert_tokens_to_ids(w) for w in TOXIC_WORDS]
    with torch.no_grad():
        lm_head[ids] *= 6.0  # make the markers likely
    probe = planted_probe(m)
    conds = build_conditions(
        m, ["none", "rollback"], probe=probe, threshold=0.5, policy=RollbackPolicy(budget=50)
    )
    res = evaluate(m, PROMPTS, conds, samples=4, max_new_tokens=8, scorer=marker_scorer)
    s = res.summary.set_index("condition")
    assert s.loc["none", "toxicity_probability"] > 0.5
    assert s.loc["rollback", "toxicity_probability"] == 0.0
    assert s.loc["rollback", "rollbacks_per_sample"] > 0
    assert s.loc["rollback", "recomputed_per_sample"] > 0


def parity_scorer(texts: list[str]) -> list[float]:
    """Toxic (1.0) when the text has an even number of characters: splits samples without a lexicon."""
    return [1.0 if len(t) % 2 == 0 else 0.0 for t in texts]


def test_sample_perplexity_against_hf_reference(model: tuple[LensModel, Any]) -> None:
    m, ref = model
    res = evaluate(m, PROMPTS, [Condition("none")], samples=2, max_new_tokens=5, scorer=parity_scorer)
    totals = {True: [0.0, 0], False: [0.0, 0]}
    for r in res.samples:
        p = m.tokenize(r["prompt"])
        g = r["tokens"]
        ids = torch.tensor([p + g])
        lp = torch.log_softmax(ref(ids).logits.double(), -1)[0]
        nll = -float(sum(lp[len(p) - 1 + i, t] for i, t in enumerate(g)))
        assert r["sample_nll"] == pytest.approx(nll, rel=1e-4)  # each sample's own NLL, by hand
        assert r["sample_nll_tokens"] == len(g)
        totals[r["score"] >= 0.5][0] += nll
        totals[r["score"] >= 0.5][1] += len(g)
    assert totals[True][1] and totals[False][1], "the parity scorer must split the samples"
    all_nll, all_n = totals[True][0] + totals[False][0], totals[True][1] + totals[False][1]
    row = res.summary.loc[0]
    assert row["sample_perplexity"] == pytest.approx(math.exp(all_nll / all_n), rel=1e-4)
    nontoxic = math.exp(totals[False][0] / totals[False][1])
    assert row["sample_perplexity_nontoxic"] == pytest.approx(nontoxic, rel=1e-4)
    assert nontoxic != pytest.approx(math.exp(all_nll / all_n), rel=1e-6)  # the split changes the value


def test_ablate_and_edit_from_locate_dir(model: tuple[LensModel, Any], tmp_path: Path) -> None:
    m, _ = model
    loc = tmp_path / "loc"
    loc.mkdir()
    pd.DataFrame(
        {
            "component": ["L1H2", "L0.mlp", "L2H0"],
            "kind": ["head", "mlp", "head"],
            "layer": [1, 0, 2],
            "head": [2, None, 0],
            "rank": [1, 2, 3],
        }
    ).to_csv(loc / "components.csv", index=False)
    assert top_components(loc, 2) == ["L1H2", "L0.mlp"]
    assert top_components(loc, 5, "heads") == ["L1H2", "L2H0"]
    before = logits(m)
    probe = planted_probe(m)
    conds = build_conditions(
        m, ["ablate", "edit"], probe=probe, locate_dir=loc, top_k=2, reference=NEUTRAL, ablate_mode="mean"
    )
    assert conds[0].settings["components"] == ["L1H2", "L0.mlp"]
    res = evaluate(
        m, PROMPTS[:2], conds, samples=2, max_new_tokens=4, scorer=marker_scorer, perplexity_texts=NEUTRAL
    )
    assert torch.equal(logits(m), before)
    assert res.summary["perplexity"].notna().all()


def test_sweep_scale_zero_equals_unsteered(model: tuple[LensModel, Any]) -> None:
    m, _ = model
    v = torch.randn(m.info.d_model)
    sweep, res = sweep_steering(
        m, PROMPTS[:2], v, 1, [0.0, 4.0], samples=2, max_new_tokens=5, scorer=marker_scorer
    )
    plain = evaluate(m, PROMPTS[:2], [Condition("none")], samples=2, max_new_tokens=5, scorer=marker_scorer)
    assert list(sweep["scale"]) == [0.0, 4.0]
    assert [s["text"] for s in res.samples[:4]] == [s["text"] for s in plain.samples]


@pytest.mark.parametrize(
    ("names", "kwargs", "needle"),
    [
        (["nonsense"], {}, "unknown conditions"),
        (["none", "none"], {}, "listed twice"),
        (["rollback"], {}, "--probe"),
        (["ablate"], {}, "--ablate-from"),
        (["steer"], {"steer_vector": torch.zeros(48)}, "--steer-layer"),
        (["steer"], {"steer_vector": torch.zeros(7), "steer_layer": 1, "steer_scale": 1.0}, "shape (48,)"),
    ],
)
def test_condition_errors(
    model: tuple[LensModel, Any], names: list[str], kwargs: dict[str, Any], needle: str
) -> None:
    m, _ = model
    with pytest.raises(ToxlensError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        build_conditions(m, names, **kwargs)


def test_condition_names_are_the_contract() -> None:
    from interventions.conditions import NEURON_CONDITIONS

    # the six base conditions, then every edit method alone and with +rollback
    assert CONDITIONS[:6] == ("none", "ablate", "steer", "edit", "rollback", "rollback+steer")
    assert CONDITIONS[6:] == NEURON_CONDITIONS and all(n in CONDITIONS for n in ("dampen", "dampen+rollback"))
