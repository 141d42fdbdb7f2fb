"""Reversible edits, checked against raw torch hooks / hand-edited weights on the untouched HF reference."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from tiny import tiny
from torch import Tensor, nn

from interventions import ablate, active_edits, project_out_weights, scale, subtract_direction
from lens.errors import ToxlensError
from lens.hooks import count_hooks
from lens.model import LensModel
from patching.result import PatchResult

PROMPT = "the cat is very red and you are a jerk"
REFERENCE = ["my friend is a dog", "you are so very blue and green", "the sun"]
KINDS = ["gpt2", "llama"]


@pytest.fixture(params=KINDS)
def pair(request: pytest.FixtureRequest, tmp_path: Any) -> tuple[LensModel, Any, str]:
    model, ref = tiny(request.param, tmp_path)
    # TransformerLens wires its own capture pre-hooks on the first forward; warm up so that
    # count_hooks() baselines are stable.
    lens_logits(model, tokens(model))
    return model, ref, request.param


# -- reference-model plumbing (raw torch hooks, no toxlens code) --------------------------------
def block(ref: Any, kind: str, layer: int) -> nn.Module:
    return ref.transformer.h[layer] if kind == "gpt2" else ref.model.layers[layer]


def o_proj(ref: Any, kind: str, layer: int) -> nn.Module:
    return block(ref, kind, layer).attn.c_proj if kind == "gpt2" else block(ref, kind, layer).self_attn.o_proj


def mlp(ref: Any, kind: str, layer: int) -> nn.Module:
    return block(ref, kind, layer).mlp


@contextmanager
def pre_hook(module: nn.Module, fn: Callable[[Tensor], Tensor]) -> Iterator[None]:
    handle = module.register_forward_pre_hook(lambda _m, args: (fn(args[0].clone()), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def fwd_hook(module: nn.Module, fn: Callable[[Tensor], Tensor]) -> Iterator[None]:
    def hook(_m: nn.Module, _args: Any, out: Any) -> Any:
        return (fn(out[0]), *out[1:]) if isinstance(out, tuple) else fn(out)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def tokens(model: LensModel, text: str = PROMPT) -> Tensor:
    return torch.tensor([model.tokenize(text)])


@torch.no_grad()
def ref_logits(ref: Any, toks: Tensor) -> Tensor:
    out: Tensor = ref(toks).logits[:, -1]
    return out


@torch.no_grad()
def lens_logits(model: LensModel, toks: Tensor) -> Tensor:
    fast = model.final_logits(toks)
    full = model.bridge(toks)[:, -1]
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
    return fast


def close(a: Tensor, b: Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def head_slice(model: LensModel, head: int) -> slice:
    dh = model.info.d_head
    return slice(head * dh, (head + 1) * dh)


def snapshot(model: LensModel) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in model.bridge.original_model.named_parameters()}


def assert_params_equal(model: LensModel, before: dict[str, Tensor]) -> None:
    now = dict(model.bridge.original_model.named_parameters())
    assert now.keys() == before.keys()
    for name, p in now.items():
        assert torch.equal(p, before[name]), name


def set_slice(s: slice, value: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    def fn(x: Tensor) -> Tensor:
        x[..., s] = value(x[..., s])
        return x

    return fn


# -- ablation / scaling vs the reference -------------------------------------------------------
def test_zero_ablate_heads_matches_reference(pair: tuple[LensModel, Any, str]) -> None:
    model, ref, kind = pair
    toks = tokens(model)
    with pre_hook(o_proj(ref, kind, 1), set_slice(head_slice(model, 2), torch.zeros_like)):
        expected = ref_logits(ref, toks)
    assert not torch.allclose(expected, ref_logits(ref, toks), atol=1e-3)  # the head matters
    with ablate(model, ["L1H2"]):
        close(lens_logits(model, toks), expected)
    close(lens_logits(model, toks), ref_logits(ref, toks))
    # two heads in two layers
    with (
        pre_hook(o_proj(ref, kind, 0), set_slice(head_slice(model, 0), torch.zeros_like)),
        pre_hook(o_proj(ref, kind, 2), set_slice(head_slice(model, 3), torch.zeros_like)),
    ):
        expected = ref_logits(ref, toks)
    with ablate(model, ["L0H0", "L2H3"]):
        close(lens_logits(model, toks), expected)


def test_zero_ablate_mlp_matches_reference(pair: tuple[LensModel, Any, str]) -> None:
    model, ref, kind = pair
    toks = tokens(model)
    with fwd_hook(mlp(ref, kind, 1), torch.zeros_like):
        expected = ref_logits(ref, toks)
    with ablate(model, ["L1.mlp"]):
        close(lens_logits(model, toks), expected)


def test_scale_matches_reference(pair: tuple[LensModel, Any, str]) -> None:
    model, ref, kind = pair
    toks = tokens(model)
    with (
        pre_hook(o_proj(ref, kind, 2), set_slice(head_slice(model, 1), lambda x: 0.3 * x)),
        fwd_hook(mlp(ref, kind, 0), lambda x: 2.5 * x),
    ):
        expected = ref_logits(ref, toks)
    with scale(model, ["L2H1"], 0.3), scale(model, ["L0.mlp"], 2.5):
        close(lens_logits(model, toks), expected)


def test_mean_ablation_matches_hand_computed_mean(pair: tuple[LensModel, Any, str]) -> None:
    model, ref, kind = pair
    s = head_slice(model, 3)
    seen_z: list[Tensor] = []
    seen_mlp: list[Tensor] = []
    with (
        pre_hook(o_proj(ref, kind, 1), lambda x: seen_z.append(x[0, :, s].clone()) or x),
        fwd_hook(mlp(ref, kind, 2), lambda x: seen_mlp.append(x[0].clone()) or x),
    ):
        for text in REFERENCE:
            ref_logits(ref, tokens(model, text))
    mean_z = torch.cat(seen_z).mean(0)
    mean_mlp = torch.cat(seen_mlp).mean(0)
    toks = tokens(model)
    with (
        pre_hook(o_proj(ref, kind, 1), set_slice(s, lambda x: mean_z.expand_as(x))),
        fwd_hook(mlp(ref, kind, 2), lambda x: mean_mlp.expand_as(x).clone()),
    ):
        expected = ref_logits(ref, toks)
    token_refs = [tokens(model, REFERENCE[0])[0], tokens(model, REFERENCE[1]), REFERENCE[2]]  # mixed types
    with ablate(model, ["L1H3", "L2.mlp"], mode="mean", reference=token_refs):
        close(lens_logits(model, toks), expected)


def test_resample_uses_reference_positions_then_its_last(pair: tuple[LensModel, Any, str]) -> None:
    model, ref, kind = pair
    s = head_slice(model, 0)
    expected = {}
    for text in REFERENCE[1:]:
        seen: list[Tensor] = []
        with pre_hook(o_proj(ref, kind, 2), lambda x, seen=seen: seen.append(x[0, :, s].clone()) or x):
            ref_logits(ref, tokens(model, text))
        act = seen[0]
        idx = torch.arange(tokens(model).shape[1]).clamp(max=act.shape[0] - 1)  # last position when shorter
        with pre_hook(o_proj(ref, kind, 2), set_slice(s, lambda x, act=act, idx=idx: act[idx].expand_as(x))):
            expected[text] = ref_logits(ref, tokens(model))
    toks = tokens(model)
    with ablate(model, ["L2H0"], mode="resample", reference=[REFERENCE[2]]):  # shorter than the prompt
        close(lens_logits(model, toks), expected[REFERENCE[2]])
    results = []
    for seed in (0, 0, 1, 2, 3):
        with ablate(model, ["L2H0"], mode="resample", reference=REFERENCE[1:], seed=seed):
            results.append(lens_logits(model, toks))
    assert torch.equal(results[0], results[1])  # seeded
    for r in results:
        assert any(torch.allclose(r, e, atol=1e-4) for e in expected.values())


def test_patch_result_top_k_components(pair: tuple[LensModel, Any, str]) -> None:
    model, _, _ = pair
    scores = torch.zeros(1, model.n_layers, model.n_heads)
    scores[0, 2, 1] = 5.0
    scores[0, 0, 3] = 4.0
    result = PatchResult(
        "test",
        ("layer", "head"),
        {"layer": list(range(model.n_layers)), "head": list(range(model.n_heads))},
        scores,
        torch.ones(1),
        torch.zeros(1),
    )
    toks = tokens(model)
    with ablate(model, ["L2H1", "L0H3"]):
        expected = lens_logits(model, toks)
    with ablate(model, result, top_k=2) as edit:
        assert "L2H1" in edit.description and "L0H3" in edit.description
        close(lens_logits(model, toks), expected)


# -- direction edits ----------------------------------------------------------------------------
def unit(model: LensModel, seed: int = 1) -> Tensor:
    d = torch.randn(model.info.d_model, generator=torch.Generator().manual_seed(seed))
    return d / d.norm()


def test_subtract_direction_matches_reference(pair: tuple[LensModel, Any, str]) -> None:
    model, ref, kind = pair
    d = unit(model)
    toks = tokens(model)
    with fwd_hook(mlp(ref, kind, 1), lambda x: x - (x @ d)[..., None] * d):
        expected = ref_logits(ref, toks)
    with subtract_direction(model, "mlp", d, layer=1):
        close(lens_logits(model, toks), expected)
    with fwd_hook(block(ref, kind, 0), lambda x: x - 0.7 * (3 * d)):
        expected = ref_logits(ref, toks)
    with subtract_direction(model, "resid_post", 3 * d, layer=0, mode="subtract", alpha=0.7):
        close(lens_logits(model, toks), expected)
    with pre_hook(block(ref, kind, 2), lambda x: x - (x @ d)[..., None] * d):
        expected = ref_logits(ref, toks)
    with subtract_direction(model, "resid_pre", 5 * d, layer=2):  # project mode normalises
        close(lens_logits(model, toks), expected)


def hand_project(ref: Any, kind: str, layer: int, head: int | None, d: Tensor, d_head: int) -> None:
    """Edit the reference model's weights by hand (W ← W − d dᵀW on the component's output weights)."""
    mod = o_proj(ref, kind, layer) if head is not None else block(ref, kind, layer).mlp
    if head is None:
        mod = mod.c_proj if kind == "gpt2" else mod.down_proj
    with torch.no_grad():
        w = mod.weight.T if kind == "gpt2" else mod.weight  # [d_model, in]
        cols = slice(None) if head is None else slice(head * d_head, (head + 1) * d_head)
        w[:, cols] -= torch.outer(d, d @ w[:, cols])
        if head is None and getattr(mod, "bias", None) is not None:
            mod.bias -= d * (d @ mod.bias)


def test_project_out_weights(pair: tuple[LensModel, Any, str]) -> None:
    model, ref, kind = pair
    d = unit(model, 7)
    toks = tokens(model)
    before, logits_before, hooks = snapshot(model), lens_logits(model, toks), count_hooks(model.bridge)
    o = model.blocks[1].attn.o.original_component
    out = model.blocks[2].mlp.out.original_component
    s = head_slice(model, 2)
    got: dict[str, Tensor] = {}

    def only_head(x: Tensor) -> Tensor:
        keep = torch.zeros_like(x)
        keep[..., s] = x[..., s]
        return keep

    with project_out_weights(model, ["L1H2", "L2.mlp"], d):
        assert count_hooks(model.bridge) == hooks  # a weight edit, no hooks
        with (
            pre_hook(o, only_head),
            fwd_hook(o, lambda y: got.__setitem__("head", y.clone()) or y),
            fwd_hook(out, lambda y: got.__setitem__("mlp", y.clone()) or y),
        ):
            model.bridge(toks)
        head_out = got["head"] - (o.bias if getattr(o, "bias", None) is not None else 0)
        assert head_out.norm() > 1e-2
        assert (head_out @ d).abs().max() < 1e-4
        assert got["mlp"].norm() > 1e-2
        assert (got["mlp"] @ d).abs().max() < 1e-4
        hand_project(ref, kind, 1, 2, d, model.info.d_head)
        hand_project(ref, kind, 2, None, d, model.info.d_head)
        close(lens_logits(model, toks), ref_logits(ref, toks))
    assert_params_equal(model, before)
    assert torch.equal(lens_logits(model, toks), logits_before)
    assert count_hooks(model.bridge) == hooks


# -- composition, nesting, hygiene ------------------------------------------------------------
def test_nested_edits_restore_in_order(pair: tuple[LensModel, Any, str]) -> None:
    model, _, _ = pair
    toks, d = tokens(model), unit(model)
    before, hooks = snapshot(model), count_hooks(model.bridge)
    levels = [lens_logits(model, toks)]
    with ablate(model, ["L0H1"]):
        levels.append(lens_logits(model, toks))
        with project_out_weights(model, ["L1.mlp", "L1H0"], d):
            levels.append(lens_logits(model, toks))
            with project_out_weights(model, ["L1.mlp"], unit(model, 3)):
                inner = lens_logits(model, toks)
                assert not torch.allclose(inner, levels[-1])
            assert torch.equal(lens_logits(model, toks), levels[2])
            with scale(model, ["L2.mlp"], 0.5):
                assert len(active_edits(model)) == 3
            assert torch.equal(lens_logits(model, toks), levels[2])
        assert torch.equal(lens_logits(model, toks), levels[1])
    assert torch.equal(lens_logits(model, toks), levels[0])
    assert_params_equal(model, before)
    assert count_hooks(model.bridge) == hooks and active_edits(model) == []


def test_handles_undo_twice_and_out_of_order(pair: tuple[LensModel, Any, str]) -> None:
    model, _, _ = pair
    toks = tokens(model)
    before, hooks, clean = snapshot(model), count_hooks(model.bridge), lens_logits(model, toks)
    a = project_out_weights(model, ["L1.mlp"], unit(model, 1))
    b = project_out_weights(model, ["L1.mlp"], unit(model, 2))
    h1, h2 = ablate(model, ["L0H0"]), scale(model, ["L2H2"], 3.0)
    h1.undo()  # hook edits may be undone in any order
    h1.undo()  # no-op
    edited = lens_logits(model, toks)
    with pytest.raises(ToxlensError, match="undone first"):
        a.undo()  # b still edits the same weight
    assert a.active and torch.equal(lens_logits(model, toks), edited)
    h2.undo()
    b.undo()
    a.undo()
    assert not a.active and active_edits(model) == []
    assert_params_equal(model, before)
    assert torch.equal(lens_logits(model, toks), clean)
    assert count_hooks(model.bridge) == hooks


def test_exception_in_body_restores(pair: tuple[LensModel, Any, str]) -> None:
    model, _, _ = pair
    toks = tokens(model)
    before, hooks, clean = snapshot(model), count_hooks(model.bridge), lens_logits(model, toks)
    with (
        pytest.raises(RuntimeError, match="boom"),
        ablate(model, ["L1H1"], mode="mean", reference=REFERENCE),
        project_out_weights(model, ["L0H2", "L2.mlp"], unit(model)),
        subtract_direction(model, "resid_pre", unit(model, 4), layer=1),
    ):
        assert count_hooks(model.bridge) > hooks
        raise RuntimeError("boom")
    assert_params_equal(model, before)
    assert count_hooks(model.bridge) == hooks
    assert torch.equal(lens_logits(model, toks), clean)


BAD: list[tuple[str, Callable[[LensModel], Any]]] = [
    ("L99H0", lambda m: ablate(m, ["L0H0", "L99H0"])),
    ("L0H99", lambda m: ablate(m, ["L0H0", "L0H99"])),
    ("bogus", lambda m: scale(m, ["bogus"], 2.0)),
    ("resid_pre", lambda m: ablate(m, ["L1.resid_pre"])),
    ("none", lambda m: ablate(m, [])),
    ("mode", lambda m: ablate(m, ["L0H0"], mode="bogus")),
    ("reference", lambda m: ablate(m, ["L0H0"], mode="mean", reference=[])),
    ("reference", lambda m: ablate(m, ["L0H0"], mode="resample")),
    ("reference", lambda m: ablate(m, ["L0H0"], mode="mean", reference=["the cat", torch.zeros(2)])),
    ("factor", lambda m: scale(m, ["L0H0"], float("inf"))),
    ("factor", lambda m: scale(m, ["L0H0"], float("nan"))),
    ("shape", lambda m: subtract_direction(m, "mlp", torch.ones(m.info.d_model + 1), layer=0)),
    ("non-finite", lambda m: subtract_direction(m, "mlp", torch.full((m.info.d_model,), torch.nan), layer=0)),
    ("zero vector", lambda m: subtract_direction(m, "mlp", torch.zeros(m.info.d_model), layer=0)),
    ("site", lambda m: subtract_direction(m, "bogus", torch.ones(m.info.d_model), layer=0)),
    ("layer", lambda m: subtract_direction(m, "mlp", torch.ones(m.info.d_model), layer=99)),
    ("direction mode", lambda m: subtract_direction(m, "mlp", torch.ones(m.info.d_model), layer=0, mode="x")),
    ("alpha", lambda m: subtract_direction(m, "mlp", torch.ones(m.info.d_model), layer=0, alpha=torch.inf)),
    ("shape", lambda m: project_out_weights(m, ["L0H0"], torch.ones(3))),
    ("non-finite", lambda m: project_out_weights(m, ["L0H0"], torch.full((m.info.d_model,), float("inf")))),
    ("L99H0", lambda m: project_out_weights(m, ["L0H0", "L0.mlp", "L99H0"], torch.ones(m.info.d_model))),
]


@pytest.mark.parametrize("needle,call", BAD, ids=[f"{i}-{n}" for i, (n, _) in enumerate(BAD)])
def test_bad_input_raises_and_leaves_model_untouched(
    pair: tuple[LensModel, Any, str], needle: str, call: Callable[[LensModel], Any]
) -> None:
    model, _, _ = pair
    before, hooks = snapshot(model), count_hooks(model.bridge)
    with pytest.raises(ToxlensError) as err:
        call(model)
    assert needle in str(err.value)
    assert_params_equal(model, before)
    assert count_hooks(model.bridge) == hooks and active_edits(model) == []
