"""Hooks are owned: after an exception inside any sweep or hook context, no hook is left behind and the
model computes exactly what it computed before."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny import TOXIC_WORDS, tiny

from lens.errors import ToxlensError
from lens.hooks import attach, count_hooks, mlp_out_name, z_name
from lens.metrics import ToxicLogMass
from lens.prompts import parse_pairs
from patching.activation import activation_patching
from patching.attribution import attribution_patching

LINES = [
    json.dumps({"toxic": "you are my idiot", "benign": "you are my friend"}),
    json.dumps({"toxic": "what a jerk", "benign": "what a pal"}),
]


class Boom(Exception):
    pass


class FailingMetric(ToxicLogMass):
    """Raises on the n-th call — i.e. in the middle of a sweep, while patch hooks are attached."""

    def __init__(self, ids: list[int], fail_at: int) -> None:
        super().__init__(ids)
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, logits: Any, pair_index: Any) -> Any:
        self.calls += 1
        if self.calls == self.fail_at:
            raise Boom
        return super().__call__(logits, pair_index)


@pytest.fixture(params=["gpt2", "llama"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, Any, list[int], torch.Tensor]:
    model, _ = tiny(request.param, tmp_path)
    ids = [model.tokenizer.convert_tokens_to_ids(w) for w in TOXIC_WORDS]
    tokens = torch.tensor([model.tokenize("you are my idiot")])
    return model, parse_pairs(LINES, model), ids, tokens


def snapshot(model: Any, tokens: torch.Tensor) -> tuple[int, torch.Tensor]:
    with torch.no_grad():  # forward first: the bridge registers its own capture hooks on first use
        logits = model.bridge(tokens)
    return count_hooks(model.bridge), logits


# Calls 1-2 are the unpatched runs; a patch before the first difference is a no-op that needs no forward,
# so the one positional pair (first difference at 3 of 4) has 3 patched rows per cell: calls 3..5 with batch 1.
@pytest.mark.parametrize("fail_at", [3, 5])
@pytest.mark.parametrize("target", ["components", "resid_by_pos", "heads_by_pos"])
def test_activation_sweep_exception_leaves_no_hooks(setup: Any, target: str, fail_at: int) -> None:
    model, pairs, ids, tokens = setup
    pairs = parse_pairs(LINES[:1], model) if target != "components" else pairs
    hooks0, logits0 = snapshot(model, tokens)
    with pytest.raises(Boom):
        activation_patching(model, pairs, FailingMetric(ids, fail_at), target, batch_size=1, progress=False)
    hooks1, logits1 = snapshot(model, tokens)
    assert hooks1 == hooks0
    assert torch.equal(logits0, logits1)


@pytest.mark.parametrize("fail_at", [1, 2])
def test_attribution_exception_leaves_no_hooks(setup: Any, fail_at: int) -> None:
    model, pairs, ids, tokens = setup
    hooks0, logits0 = snapshot(model, tokens)
    with pytest.raises(Boom):
        attribution_patching(model, pairs, FailingMetric(ids, fail_at))
    hooks1, logits1 = snapshot(model, tokens)
    assert hooks1 == hooks0 and torch.equal(logits0, logits1)


def test_nested_attach_raising_hook_and_body(setup: Any) -> None:
    model, _, _, tokens = setup
    hooks0, logits0 = snapshot(model, tokens)

    def bad_hook(t: torch.Tensor) -> None:
        raise Boom

    with pytest.raises(Boom), attach(model.bridge, [(z_name(0), lambda t: t * 0)]):  # noqa: SIM117 (nested on purpose)
        with attach(model.bridge, [(mlp_out_name(1), bad_hook)]):
            model.bridge(tokens)
    assert snapshot(model, tokens)[0] == hooks0
    with pytest.raises(KeyboardInterrupt), attach(model.bridge, [(z_name(1), lambda t: None)]):
        raise KeyboardInterrupt
    hooks1, logits1 = snapshot(model, tokens)
    assert hooks1 == hooks0 and torch.equal(logits0, logits1)


def test_attach_leaves_foreign_hooks_alone(setup: Any) -> None:
    model, _, _, tokens = setup
    snapshot(model, tokens)
    seen: list[int] = []
    point = model.bridge.hook_dict[mlp_out_name(0)]
    point.add_hook(lambda t, hook: seen.append(1))  # somebody else's hook
    try:
        hooks0 = count_hooks(model.bridge)
        with attach(model.bridge, [(mlp_out_name(0), lambda t: None)]):
            model.bridge(tokens)
        assert count_hooks(model.bridge) == hooks0
        model.bridge(tokens)
        assert len(seen) == 2  # the foreign hook survived our context
    finally:
        model.bridge.reset_hooks()


def test_unknown_hook_name_touches_nothing(setup: Any) -> None:
    model, _, _, tokens = setup
    hooks0, _ = snapshot(model, tokens)
    with pytest.raises(ToxlensError, match=r"unknown hook name 'blocks\.0\.attn\.hook_zz'.*closest"):  # noqa: SIM117
        with attach(model.bridge, [(z_name(0), lambda t: None), ("blocks.0.attn.hook_zz", lambda t: None)]):
            pass
    assert count_hooks(model.bridge) == hooks0
