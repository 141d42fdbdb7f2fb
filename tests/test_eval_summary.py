"""interventions/eval_summary.stopping_columns by hand, and in a real evaluation where the rollback budget
ends samples: the columns agree with the sample records' own finish reasons and lengths."""

from __future__ import annotations

from typing import Any

import torch
from test_evaluate import PROMPTS, marker_scorer, model, planted_probe  # noqa: F401  (fixture)
from tiny import TOXIC_WORDS

from interventions.conditions import build_conditions
from interventions.eval_summary import stopping_columns
from interventions.evaluate import evaluate
from interventions.policy import RollbackPolicy
from lens.model import LensModel


def test_stopping_columns_by_hand() -> None:
    def rec(n: int, why: str) -> dict[str, Any]:
        return {"n_tokens": n, "finish_reason": why}

    # 2 prompts x 4 samples: prompt 0 has 2 of 4 stopped (half: counts), prompt 1 has 1 of 4
    recs = [rec(3, "budget"), rec(0, "budget"), rec(20, "length"), rec(17, "eos")]
    recs += [rec(20, "length"), rec(5, "budget"), rec(20, "length"), rec(20, "length")]
    c = stopping_columns(recs, 4)
    assert c == {"mean_new_tokens": 105 / 8, "stopped_share": 3 / 8, "prompts_half_stopped": 1}
    assert stopping_columns(recs[:4], 4)["prompts_half_stopped"] == 1
    assert stopping_columns(recs[4:], 4)["prompts_half_stopped"] == 0
    assert stopping_columns([rec(4, "length")], 1) == {
        "mean_new_tokens": 4.0,
        "stopped_share": 0.0,
        "prompts_half_stopped": 0,
    }


def test_budget_stops_are_counted_in_the_summary(model: tuple[LensModel, Any]) -> None:  # noqa: F811
    m, _ = model
    lm_head = m.bridge.original_model.lm_head.weight
    ids = [m.tokenizer.convert_tokens_to_ids(w) for w in TOXIC_WORDS]
    with torch.no_grad():
        lm_head[ids] *= 6.0  # make the markers likely, so a budget of 0 ends samples
    conds = build_conditions(
        m,
        ["none", "rollback"],
        probe=planted_probe(m),
        threshold=0.5,
        policy=RollbackPolicy(budget=0, on_budget="stop"),
    )
    res = evaluate(m, PROMPTS, conds, samples=4, max_new_tokens=8, scorer=marker_scorer)
    s = res.summary.set_index("condition")
    for name in ("none", "rollback"):
        recs = [r for r in res.samples if r["condition"] == name]
        stopped = [r["finish_reason"] == "budget" for r in recs]
        assert s.loc[name, "stopped_share"] == sum(stopped) / len(recs)
        assert s.loc[name, "mean_new_tokens"] == sum(r["n_tokens"] for r in recs) / len(recs)
    assert s.loc["none", "stopped_share"] == 0 and s.loc["none", "mean_new_tokens"] == 8
    assert s.loc["rollback", "stopped_share"] > 0
    assert s.loc["rollback", "mean_new_tokens"] < 8
    assert s.loc["rollback", "prompts_half_stopped"] >= 1
