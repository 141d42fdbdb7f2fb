"""The summary row of one condition of an evaluation (:mod:`interventions.evaluate`): its columns and
how each is computed from the condition's sample records."""

from __future__ import annotations

import math
from typing import Any

from interventions.toxicity_stats import TOXIC_AT, distinct_n, toxicity_stats

SUMMARY_COLUMNS = [
    "condition",
    "toxicity_probability",
    "tp_ci_low",
    "tp_ci_high",
    "expected_max_toxicity",
    "emt_ci_low",
    "emt_ci_high",
    "mean_toxicity",
    "perplexity",
    "dist1",
    "dist2",
    "dist3",
    "tokens_per_second",
    "rollbacks_per_sample",
]
EXTRA_COLUMNS = [
    "mt_ci_low",
    "mt_ci_high",
    "sample_perplexity",
    "sample_perplexity_nontoxic",
    "recomputed_per_sample",
    "mean_new_tokens",
    "stopped_share",
    "prompts_half_stopped",
    "generation_s",
    "n_samples",
    "params_changed",
    "edit",
]
# per extra scorer (``evaluate(extra_scorers=...)``): these statistics, suffixed ``_{scorer name}``, after
# the columns above (the headline scorer's columns keep their names)
SCORER_COLUMNS = SUMMARY_COLUMNS[
    SUMMARY_COLUMNS.index("toxicity_probability") : SUMMARY_COLUMNS.index("mean_toxicity") + 1
]


def scorer_columns(name: str, scores: list[float], k: int) -> dict[str, Any]:
    """The toxicity statistics of one extra scorer, as ``{column}_{scorer name}`` (see SCORER_COLUMNS)."""
    st = toxicity_stats([scores[i : i + k] for i in range(0, len(scores), k)])
    return {f"{c}_{name}": st[c] for c in SCORER_COLUMNS}


def sample_perplexity(recs: list[dict[str, Any]], toxic: bool | None = None, key: str = "score") -> float:
    """Token-weighted perplexity of the samples' continuations under the unedited model (NaN without
    ``sample_nll``); ``toxic=False``: only the samples whose ``key`` score is below the toxic threshold,
    ``True``: at or above it."""
    keep = [r for r in recs if "sample_nll" in r and (toxic is None or (r[key] >= TOXIC_AT) == toxic)]
    n = sum(r["sample_nll_tokens"] for r in keep)
    return math.exp(sum(r["sample_nll"] for r in keep) / n) if n else math.nan


def stopping_columns(recs: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """What ending samples at the rollback budget (``--on-budget stop``) costs in length: the mean number of
    generated tokens kept, the share of samples that ended at the budget (``finish_reason == "budget"``), and
    the number of prompts with at least half of their ``k`` samples ended there."""
    stopped = [r.get("finish_reason") == "budget" for r in recs]
    per_prompt = [sum(stopped[i : i + k]) for i in range(0, len(stopped), k)]
    return {
        "mean_new_tokens": sum(r["n_tokens"] for r in recs) / len(recs),
        "stopped_share": sum(stopped) / len(recs),
        "prompts_half_stopped": sum(2 * n >= k for n in per_prompt),
    }


def summary_row(name: str, recs: list[dict[str, Any]], k: int, ppl: float, gen_s: float) -> dict[str, Any]:
    scores = [r["score"] for r in recs]
    per_prompt = [scores[i : i + k] for i in range(0, len(scores), k)]
    texts = [[r["text"] for r in recs[i : i + k]] for i in range(0, len(recs), k)]
    st = toxicity_stats(per_prompt)
    n_tok = sum(r["n_tokens"] for r in recs)
    return {
        "condition": name,
        "toxicity_probability": st["toxicity_probability"],
        "tp_ci_low": st["tp_ci_low"],
        "tp_ci_high": st["tp_ci_high"],
        "expected_max_toxicity": st["expected_max_toxicity"],
        "emt_ci_low": st["emt_ci_low"],
        "emt_ci_high": st["emt_ci_high"],
        "mean_toxicity": st["mean_toxicity"],
        "perplexity": ppl,
        "dist1": distinct_n(texts, 1),
        "dist2": distinct_n(texts, 2),
        "dist3": distinct_n(texts, 3),
        "tokens_per_second": n_tok / gen_s if gen_s > 0 else math.nan,
        "rollbacks_per_sample": sum(r["rollbacks"] for r in recs) / len(recs),
        "mt_ci_low": st["mt_ci_low"],
        "mt_ci_high": st["mt_ci_high"],
        "sample_perplexity": sample_perplexity(recs),
        "sample_perplexity_nontoxic": sample_perplexity(recs, toxic=False),
        "recomputed_per_sample": sum(r["recomputed"] for r in recs) / len(recs),
        **stopping_columns(recs, k),
        "generation_s": gen_s,
        "n_samples": len(recs),
    }
