"""generate(): a finished row leaves the batch (its row of the mask and of the KV cache is dropped), and
that changes nothing: rows that end at different steps (planted EOS, the length limit, a spent rollback
budget) give the same output as one prompt per batch, and match the full-recompute reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from test_generate import (
    PROMPTS,
    SAFE,
    THRESHOLD,
    assert_matches,
    assert_same,
    config,
    edit_both,
    final_hidden_direction,
    plant,
    reference,
)
from torch import Tensor

from interventions.generate import generate
from interventions.policy import Generation, RollbackPolicy
from lens.hooks import attach, resid_pre_name
from lens.model import LensModel


def forward_batch_sizes(model: LensModel, fn: Callable[[], list[Generation]]) -> list[int]:
    """Run ``fn`` and return the batch size of every forward pass the model ran (read at block 0)."""
    sizes: list[int] = []

    def record(x: Tensor) -> None:
        sizes.append(int(x.shape[0]))

    with attach(model.bridge, [(resid_pre_name(0), record)]):
        fn()
    return sizes


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_finished_rows_leave_the_batch(tiny_pair: Callable[..., tuple[LensModel, Any]], kind: str) -> None:
    model, ref = tiny_pair(kind)
    probe = plant(model, ref, kind, boost=(0.6, 0.4))
    eos = model.tokenizer.eos_token_id
    m = final_hidden_direction(model, ref)
    head = "transformer.wte.weight" if kind == "gpt2" else "lm_head.weight"
    edit_both(model, ref, head, lambda w: w[eos].add_(0.45 * m))  # some rows sample EOS early
    prompts = [*PROMPTS, "she is a jerk", "so", *PROMPTS]
    policy = RollbackPolicy(safe_threshold=SAFE, budget=1, on_budget="stop")
    kw: dict[str, Any] = dict(seed=5, monitor=probe, threshold=THRESHOLD, policy=policy)
    gens: list[Generation] = []

    def run() -> list[Generation]:
        gens[:] = generate(model, prompts, 14, batch_size=len(prompts), **kw)
        return gens

    sizes = forward_batch_sizes(model, run)
    steps = [g.forward_tokens - len(g.prompt_tokens) for g in gens]  # one-token forwards of each row
    # the prompt pass holds every row; afterwards a forward holds exactly the rows that still feed tokens
    assert sizes[0] == len(prompts)
    assert sizes[1:] == [sum(s > t for s in steps) for t in range(max(steps))]
    assert len(set(steps)) > 2 and sizes[-1] < len(prompts)  # rows really end at different steps
    assert {g.finish_reason for g in gens} >= {"eos", "length"}

    # the same as one prompt per batch, and as the full-recompute reference
    assert_same(gens, generate(model, prompts, 14, batch_size=1, **kw))
    cfg = config(monitor=probe, threshold=THRESHOLD, policy=policy, stop_at_eos=True, eos=eos)
    assert_matches(gens, reference(ref, model, prompts, 14, cfg, seed=5))


def test_budget_stop_and_rollback_in_a_shrinking_batch(
    tiny_pair: Callable[..., tuple[LensModel, Any]],
) -> None:
    """Rows stopped by their budget leave while others keep rolling back (masked slots, cropping) and
    sampling: the runs equal batch sizes 1 and 3 and the reference, with and without corrective steering."""
    model, ref = tiny_pair("llama")
    probe = plant(model, ref, "llama")
    prompts = [*PROMPTS, "she is a jerk", "so"]
    for corrective in (0.0, 2.0):
        policy = RollbackPolicy(
            safe_threshold=SAFE, budget=2, on_budget="stop", steer_scale=corrective, steer_tokens=2
        )
        kw: dict[str, Any] = dict(
            seed=8, monitor=probe, threshold=THRESHOLD, policy=policy, stop_at_eos=False
        )
        gens = generate(model, prompts, 16, batch_size=len(prompts), **kw)
        reasons = [g.finish_reason for g in gens]
        assert "budget" in reasons and "length" in reasons, reasons
        assert sum(len(g.rollbacks) for g in gens) >= 3
        assert_same(gens, generate(model, prompts, 16, batch_size=1, **kw))
        assert_same(gens, generate(model, prompts, 16, batch_size=3, **kw))
        cfg = config(monitor=probe, threshold=THRESHOLD, policy=policy)
        assert_matches(gens, reference(ref, model, prompts, 16, cfg, seed=8))
