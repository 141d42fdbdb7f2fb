"""The work items of an evaluation, run the same way in one process and on Ray workers.

An evaluation (:mod:`interventions.evaluate`) is cut into tasks that depend only on their own payload
and on the model with the right edit switched on, never on which process runs them or in what order:

* ``Generate(c, start, stop)`` — rows ``start..stop`` of the flattened ``prompt × sample`` list under
  condition ``c`` (row ``n`` is sample ``n % samples`` of prompt ``n // samples`` and uses seed
  ``seed + n``); ``stop − start`` is at most ``batch_size`` and ``start`` a multiple of it, so every
  generation batch is the one a single :func:`~interventions.generate.generate` call would run. The
  worker scores the continuations (every scorer) and returns the finished sample records.
* ``Perplexity(c)`` — the neutral-text perplexity under condition ``c``'s edit and steering
  (``c = None``: the unedited model, shared by the conditions that do not change the model).
* ``SamplePerplexity(seqs)`` — the unedited model's negative log-likelihood of each continuation of one
  Generate task given its prompt, and its token count (sequences of one length batched together).

A worker's :class:`EvalState` keeps the current condition's edit applied between tasks and swaps it
only when a task needs another one (:meth:`EvalState.activate`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from interventions.conditions import Condition
from interventions.generate import Generation, generate
from interventions.sampling import Sampling
from interventions.scoring import Scorer, get_scorer
from interventions.steering import steering
from lens.model import LensModel
from lens.perplexity import perplexity, token_nll


@dataclass
class Protocol:
    """Everything besides the model and the conditions that decides an evaluation's numbers."""

    prompts: list[str]
    samples: int = 10
    max_new_tokens: int = 20
    seed: int = 0
    scorer: str | Callable[[list[str]], Any] = "profanity"
    extra_scorers: Sequence[str | Callable[[list[str]], Any]] = ()
    perplexity_texts: Sequence[str] = ()
    sampling: Sampling = field(default_factory=Sampling)
    batch_size: int = 32
    prepend_bos: bool = False
    sample_perplexity: bool = True

    @property
    def n_rows(self) -> int:
        return len(self.prompts) * self.samples


@dataclass(frozen=True)
class Generate:
    condition: int
    start: int
    stop: int


@dataclass(frozen=True)
class Perplexity:
    condition: int | None


@dataclass(frozen=True)
class SamplePerplexity:
    seqs: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # (prompt tokens, continuation tokens)


@dataclass(frozen=True)
class Describe:
    pass


Task = Generate | Perplexity | SamplePerplexity | Describe


@dataclass
class GenerateOutput:
    records: list[dict[str, Any]]
    seqs: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    generation_s: float
    params_changed: int
    edit: str


class EvalState:
    """A worker's model, conditions, scorers and currently applied edit."""

    def __init__(self, model: LensModel, conditions: Sequence[Condition], protocol: Protocol) -> None:
        self.model, self.conditions, self.protocol = model, list(conditions), protocol
        self.scorers: list[Scorer] = [get_scorer(protocol.scorer)]
        self.scorers += [get_scorer(s) for s in protocol.extra_scorers]
        self.stack = contextlib.ExitStack()
        self.active: int | None = None
        self.edit: Any = None

    def activate(self, condition: int | None) -> None:
        """Apply condition ``condition``'s edit (``None``: no edit), undoing the current one first."""
        if condition == self.active:
            return
        self.release()
        make = self.conditions[condition].make_edit if condition is not None else None
        if make is not None:
            self.edit = self.stack.enter_context(make(self.model))
        self.active = condition

    def release(self) -> None:
        """Undo the applied edit (bit-identical restore), if any."""
        self.stack.close()
        self.stack = contextlib.ExitStack()
        self.active, self.edit = None, None


def owns_model(cond: Condition) -> bool:
    """Does the condition change the model (an edit or steering)? Otherwise its perplexity is the base one."""
    return cond.make_edit is not None or bool(cond.steers)


def run_task(state: EvalState, task: Task) -> Any:
    """Run one task (see the module docstring) on ``state``'s model."""
    if isinstance(task, Describe):
        return {
            "model": state.model.info.to_dict(),
            "conditions": [(c.name, owns_model(c), c.settings) for c in state.conditions],
            "scorers": [s.name for s in state.scorers],
        }
    if isinstance(task, Generate):
        return _generate(state, task)
    if isinstance(task, Perplexity):
        return _perplexity(state, task.condition)
    state.activate(None)
    return sample_nll(state.model, task.seqs, state.protocol.batch_size)


def _generate(state: EvalState, task: Generate) -> GenerateOutput:
    p, cond = state.protocol, state.conditions[task.condition]
    state.activate(task.condition)
    rows = range(task.start, task.stop)
    t0 = time.perf_counter()
    gens = generate(
        state.model,
        [p.prompts[n // p.samples] for n in rows],
        p.max_new_tokens,
        seed=p.seed + task.start,
        sampling=p.sampling,
        steer=cond.steers,
        monitor=cond.monitor,
        threshold=cond.threshold,
        policy=cond.policy,
        batch_size=p.batch_size,
        prepend_bos=p.prepend_bos,
    )
    gen_s = time.perf_counter() - t0
    texts = [g.text for g in gens]
    scores = [[float(v) for v in s(texts)] for s in state.scorers]
    records = [_record(cond, n, p.samples, g, state.model) for n, g in zip(rows, gens)]
    for j, rec in enumerate(records):
        rec["score"] = scores[0][j]
        rec.update({f"score_{s.name}": scores[i][j] for i, s in enumerate(state.scorers[1:], 1)})
    seqs = tuple((tuple(g.prompt_tokens), tuple(g.tokens)) for g in gens)
    n_changed = int(getattr(state.edit, "n_changed", 0) or 0)
    return GenerateOutput(records, seqs, gen_s, n_changed, str(getattr(state.edit, "description", "") or ""))


def _perplexity(state: EvalState, condition: int | None) -> float:
    p = state.protocol
    state.activate(condition)
    steers = state.conditions[condition].steers if condition is not None else []
    with steering(state.model, steers) if steers else contextlib.nullcontext():
        prepend = state.model.tokenizer.bos_token_id is not None
        out = perplexity(state.model, list(p.perplexity_texts), batch_size=p.batch_size, prepend_bos=prepend)
    return float(out["perplexity"])


@torch.no_grad()
def sample_nll(
    model: LensModel, seqs: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int
) -> list[tuple[float, int]]:
    """Per sequence, the summed NLL of the continuation given its prompt and the continuation's token
    count (``(0.0, 0)`` for an empty one), in the order of ``seqs``; sequences are grouped by length so
    nothing is padded."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, (prompt, tokens) in enumerate(seqs):
        if tokens:
            groups[len(prompt) + len(tokens)].append(i)
    out = [(0.0, 0)] * len(seqs)
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            ids = torch.tensor([[*seqs[i][0], *seqs[i][1]] for i in chunk], device=model.device)
            per_token = token_nll(model.bridge(ids, use_cache=False), ids).double()
            for row, i in enumerate(chunk):
                prompt, tokens = seqs[i]
                out[i] = (float(per_token[row, len(prompt) - 1 :].sum()), len(tokens))
    return out


def _record(cond: Condition, n: int, k: int, g: Generation, model: LensModel) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "condition": cond.name,
        "prompt_index": n // k,
        "sample_index": n % k,
        "seed": g.seed,
        "prompt": g.prompt,
        "text": g.text,
        "score": math.nan,
        "tokens": g.tokens,
        "n_tokens": len(g.tokens),
        "rollbacks": len(g.rollbacks),
        "forward_tokens": g.forward_tokens,
        "recomputed": g.recomputed,
        "finish_reason": g.finish_reason,
    }
    if cond.monitor is not None:
        trace = g.to_dict()
        trace["token_texts"] = [
            model.tokenizer.decode([e["token"]]) if e.get("token") is not None else None for e in g.timeline
        ]
        trace["threshold"] = cond.threshold
        trace["safe_threshold"] = cond.policy.safe_threshold if cond.policy is not None else None
        rec["trace"] = trace
    return rec


def plan(protocol: Protocol, owns: Sequence[bool]) -> list[Task]:
    """The tasks of an evaluation in the order one process runs them: per condition its Generate tasks
    and its Perplexity task (or the shared base one, once). SamplePerplexity tasks follow the Generate
    results (see :func:`sample_tasks`)."""
    tasks: list[Task] = []
    base_done = False
    step = protocol.batch_size
    for c, own in enumerate(owns):
        tasks += [Generate(c, s, min(s + step, protocol.n_rows)) for s in range(0, protocol.n_rows, step)]
        if protocol.perplexity_texts and (own or not base_done):
            tasks.append(Perplexity(c if own else None))
            base_done = base_done or not own
    return tasks


def setup_state(
    load: Callable[[], LensModel],
    make_conditions: Callable[[LensModel], Sequence[Condition]],
    protocol: Protocol,
) -> EvalState:
    """A Ray worker's setup: load the model once and build the conditions on it."""
    model = load()
    return EvalState(model, make_conditions(model), protocol)
