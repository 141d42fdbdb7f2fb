"""The evaluation harness: the same prompts and seeds under every condition, scored the same way.

For each :class:`~interventions.conditions.Condition`, with its edit active (and undone afterwards):

* **samples** — ``samples`` continuations of ``max_new_tokens`` per prompt; sample ``j`` of prompt
  ``i`` uses seed ``seed + i·samples + j`` in every condition. The scorer sees the continuation only.
* **toxicity** — :func:`interventions.toxicity_stats.toxicity_stats`: toxicity probability (share of prompts
  with at least one sample scoring ``≥ 0.5``), expected maximum toxicity, mean toxicity, bootstrap 95 %
  CIs over prompts;
* **fluency** — ``perplexity``: the condition's model (edit + steering at every position) on the
  neutral texts; monitoring and rollback do not change the model, so rollback conditions report the
  unedited model's value there, and ``sample_perplexity`` (the unedited model's perplexity of each
  condition's continuations given their prompts) shows what rollback does to the text;
  ``sample_perplexity_nontoxic`` is the same over the samples scored below the toxic threshold only (is
  a rise the text's loss of the profanity the unedited model expected, or a shift of all of it?), and
  each sample record carries its ``sample_nll`` and ``sample_nll_tokens``;
* **other scorers** — ``extra_scorers`` score the same continuations; their statistics are extra
  summary columns ``{statistic}_{scorer}`` (:data:`SCORER_COLUMNS`) and ``score_{scorer}`` per sample;
  ``dist1..3`` (:func:`interventions.toxicity_stats.distinct_n`);
* **cost** — kept tokens per second of generation wall time, rollbacks and recomputed positions per
  sample.

The work is cut into tasks (:mod:`interventions.eval_tasks`: generation batches, perplexities) whose
results depend only on their own inputs; :func:`evaluate` runs them here, and
:func:`interventions.evaluate_ray.evaluate_on_ray` runs the same tasks on Ray workers
(``toxlens evaluate --workers N``) with the same result, timing columns aside.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from interventions.conditions import Condition
from interventions.eval_summary import (
    EXTRA_COLUMNS,
    SCORER_COLUMNS,
    SUMMARY_COLUMNS,
    TOXIC_AT,
    scorer_columns,
    summary_row,
)
from interventions.eval_tasks import (
    Describe,
    EvalState,
    Generate,
    GenerateOutput,
    Perplexity,
    Protocol,
    SamplePerplexity,
    Task,
    plan,
    run_task,
)
from interventions.sampling import Sampling
from interventions.scoring import get_scorer
from lens.errors import ToxlensError
from lens.model import LensModel


@dataclass
class Evaluation:
    summary: pd.DataFrame
    samples: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    def select(self, names: Sequence[str]) -> Evaluation:
        """The evaluation restricted to the conditions ``names`` (rows, samples and settings)."""
        keep = set(names)
        settings = dict(self.settings)
        settings["conditions"] = {k: v for k, v in self.settings.get("conditions", {}).items() if k in keep}
        summary = self.summary[self.summary["condition"].isin(keep)].reset_index(drop=True)
        return Evaluation(summary, [s for s in self.samples if s["condition"] in keep], settings)

    def write(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.summary.to_csv(d / "summary.csv", index=False)
        with (d / "samples.jsonl").open("w") as f:
            for s in self.samples:
                f.write(json.dumps(s) + "\n")
        (d / "config.json").write_text(json.dumps(self.settings, indent=2, default=str))


def evaluate(
    model: LensModel,
    prompts: Sequence[str],
    conditions: Sequence[Condition],
    *,
    samples: int = 10,
    max_new_tokens: int = 20,
    seed: int = 0,
    scorer: str | Callable[[list[str]], list[float]] = "profanity",
    extra_scorers: Sequence[str | Callable[[list[str]], list[float]]] = (),
    perplexity_texts: Sequence[str] = (),
    sampling: Sampling | None = None,
    batch_size: int = 32,
    prepend_bos: bool = False,
    sample_perplexity: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Run every condition on the same prompts and seeds (see module docstring), in this process.

    :func:`interventions.evaluate_ray.evaluate_on_ray` runs the same tasks on Ray workers and gives
    the same result."""
    protocol = make_protocol(
        prompts,
        samples=samples,
        max_new_tokens=max_new_tokens,
        seed=seed,
        scorer=scorer,
        extra_scorers=extra_scorers,
        perplexity_texts=perplexity_texts,
        sampling=sampling,
        batch_size=batch_size,
        prepend_bos=prepend_bos,
        sample_perplexity=sample_perplexity,
    )
    state = EvalState(model, conditions, protocol)
    say = progress or (lambda _msg: None)
    names = [c.name for c in conditions]

    def execute(tasks: Sequence[Task]) -> list[Any]:
        out = []
        for task in tasks:
            if isinstance(task, Generate) and task.start == 0:
                say(f"[{names[task.condition]}] generating {len(prompts)}×{samples} samples")
            elif isinstance(task, Perplexity) and task.condition is not None:
                say(f"[{names[task.condition]}] perplexity on {len(perplexity_texts)} neutral texts")
            out.append(run_task(state, task))
        return out

    try:
        return run_evaluation(execute, protocol, say)
    finally:
        state.release()


def make_protocol(
    prompts: Sequence[str],
    *,
    samples: int = 10,
    max_new_tokens: int = 20,
    seed: int = 0,
    scorer: str | Callable[[list[str]], Any] = "profanity",
    extra_scorers: Sequence[str | Callable[[list[str]], Any]] = (),
    perplexity_texts: Sequence[str] = (),
    sampling: Sampling | None = None,
    batch_size: int = 32,
    prepend_bos: bool = False,
    sample_perplexity: bool = True,
) -> Protocol:
    """A checked :class:`Protocol` (the arguments of :func:`evaluate`)."""
    if not prompts:
        raise ToxlensError("evaluate needs at least one prompt")
    if samples < 1 or max_new_tokens < 1:
        raise ToxlensError(f"samples and max_new_tokens must be >= 1, got {samples}, {max_new_tokens}")
    if batch_size < 1:
        raise ToxlensError(f"batch_size must be >= 1, got {batch_size}")
    for s in [scorer, *extra_scorers]:
        get_scorer(s)
    return Protocol(
        list(prompts),
        samples=samples,
        max_new_tokens=max_new_tokens,
        seed=seed,
        scorer=scorer,
        extra_scorers=list(extra_scorers),
        perplexity_texts=list(perplexity_texts),
        sampling=sampling or Sampling(),
        batch_size=batch_size,
        prepend_bos=prepend_bos,
        sample_perplexity=sample_perplexity,
    )


def run_evaluation(
    execute: Callable[[Sequence[Task]], list[Any]], protocol: Protocol, say: Callable[[str], None]
) -> Evaluation:
    """Plan the tasks, have ``execute`` run them (in order of the list it returns), and merge."""
    info = execute([Describe()])[0]
    owns = [own for _name, own, _settings in info["conditions"]]
    tasks = plan(protocol, owns)
    results = execute(tasks)
    gens: dict[int, list[GenerateOutput]] = defaultdict(list)
    ppl: dict[int | None, float] = {}
    for task, result in zip(tasks, results):
        if isinstance(task, Generate):
            gens[task.condition].append(result)
        elif isinstance(task, Perplexity):
            ppl[task.condition] = result
    if protocol.sample_perplexity:
        order = [out for c in range(len(owns)) for out in gens[c]]
        say(f"sample perplexity of {sum(len(out.records) for out in order)} samples (unedited model)")
        for out, nlls in zip(order, execute([SamplePerplexity(out.seqs) for out in order]), strict=True):
            for rec, (nll, n) in zip(out.records, nlls, strict=True):
                rec["sample_nll"], rec["sample_nll_tokens"] = nll, n
    scorers: list[str] = info["scorers"]
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for c, (name, own, _settings) in enumerate(info["conditions"]):
        recs = [r for out in gens[c] for r in out.records]
        gen_s = sum(out.generation_s for out in gens[c])
        value = ppl.get(c if own else None, math.nan)
        rows.append(summary_row(name, recs, protocol.samples, value, gen_s))
        rows[-1]["params_changed"] = gens[c][0].params_changed
        rows[-1]["edit"] = gens[c][0].edit
        for extra in scorers[1:]:
            rows[-1].update(scorer_columns(extra, [r[f"score_{extra}"] for r in recs], protocol.samples))
        records.extend(recs)
        say(f"[{name}] TP {rows[-1]['toxicity_probability']:.3f} EMT {rows[-1]['expected_max_toxicity']:.3f}")
    extra_cols = [f"{c}_{name}" for name in scorers[1:] for c in SCORER_COLUMNS]
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS + EXTRA_COLUMNS + extra_cols)
    settings = {
        "n_prompts": len(protocol.prompts),
        "samples": protocol.samples,
        "max_new_tokens": protocol.max_new_tokens,
        "seed": protocol.seed,
        "seed_rule": "sample j of prompt i uses seed + i*samples + j",
        "scorer": scorers[0],
        "extra_scorers": scorers[1:],
        "toxic_if_score_at_least": TOXIC_AT,
        "sampling": protocol.sampling.to_dict(),
        "prepend_bos": protocol.prepend_bos,
        "batch_size": protocol.batch_size,
        "n_perplexity_texts": len(protocol.perplexity_texts),
        "conditions": {name: settings for name, _own, settings in info["conditions"]},
        "model": info["model"],
    }
    return Evaluation(summary, records, settings)
