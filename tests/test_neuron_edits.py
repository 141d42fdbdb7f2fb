"""Neuron-level edits (dampen, its random control, surgery, project, subtract): each checked against the
untouched HF reference edited by hand or through raw torch hooks; restores are bit-identical."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_edits import assert_params_equal, fwd_hook, snapshot
from test_neurons import LABELS, TEXTS, out_proj
from tiny import tiny
from torch import Tensor

from interventions.edit_methods import EDIT_METHODS, get_method
from interventions.neuron_edits import aura_alphas, dampen, random_alphas, subtract, surgery
from interventions.neuron_project import project
from lens.errors import ToxlensError
from lens.hooks import count_hooks
from lens.model import LensModel
from lens.weights import mlp_weights
from patching.neuron_result import NeuronRanking
from patching.neurons import rank_from_texts

KINDS = ["gpt2", "llama"]
PROMPT = "the cat is very red and you are a jerk"


@pytest.fixture(params=KINDS)
def setup(request: pytest.FixtureRequest, tmp_path: Any) -> tuple[LensModel, Any, str, NeuronRanking]:
    model, ref = tiny(request.param, tmp_path)
    ranking = rank_from_texts(model, TEXTS, LABELS, n_attribution=0, subspace_rank=3)
    return model, ref, request.param, ranking


def logits(model: LensModel) -> Tensor:
    with torch.no_grad():
        out: Tensor = model.bridge(torch.tensor([model.tokenize(PROMPT)]))
    return out


def ref_logits(ref: Any, model: LensModel) -> Tensor:
    with torch.no_grad():
        out: Tensor = ref(torch.tensor([model.tokenize(PROMPT)])).logits
    return out


def test_aura_alphas_follow_the_formula(setup: Any) -> None:
    _, _, _, r = setup
    a = aura_alphas(r)
    au = r.neuron_auroc
    on = au > 0.5
    torch.testing.assert_close(a[on], (1 - 2 * (au[on].double() - 0.5)).float())
    assert torch.all(a[~on] == 1)
    only = aura_alphas(r, 0.5, layers=[1])
    assert torch.all(only[[0, 2]] == 1) and torch.equal(only[1], a[1])
    with pytest.raises(ToxlensError, match="min_auroc"):
        aura_alphas(r, 0.4)


def test_random_alphas_keep_each_layers_values() -> None:
    a = torch.rand(3, 50)
    a[a < 0.5] = 1.0
    b = random_alphas(a, seed=3)
    for la in range(3):
        assert torch.equal(a[la].sort().values, b[la].sort().values)
        assert (b[la] != 1).sum() == (a[la] != 1).sum()
    assert not torch.equal(a, b) and torch.equal(b, random_alphas(a, seed=3))


def test_dampen_equals_scaling_the_neurons_in_the_reference(setup: Any) -> None:
    model, ref, kind, r = setup
    alpha = aura_alphas(r)
    before = snapshot(model)
    hooks_before = count_hooks(model.bridge)
    with dampen(model, alpha) as edit:
        got = logits(model)
        assert count_hooks(model.bridge) == hooks_before  # folded into weights, no hook
        assert edit.n_units == int((alpha != 1).sum())
        assert edit.n_changed == int((alpha != 1).sum()) * model.info.d_model
    # independent reference: multiply each neuron's activation before the output projection
    handles = [
        out_proj(ref, kind, la).register_forward_pre_hook(
            lambda _m, args, la=la: (args[0] * alpha[la].to(args[0]),)
        )
        for la in range(model.n_layers)
    ]
    try:
        expect = ref_logits(ref, model)
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(got, expect, atol=1e-4, rtol=0)
    assert_params_equal(model, before)


def test_surgery_shifts_the_most_aligned_rows(setup: Any) -> None:
    model, ref, kind, r = setup
    before = snapshot(model)
    with surgery(model, r, k=4, alpha=0.5, layers=[0, 2]) as edit:
        assert edit.n_units == 8
        assert edit.n_changed == 8 * model.info.d_model
        w0 = mlp_weights(model, 0).inputs[0].detach().clone()
        changed = (w0 != mlp_weights(model, 0).inputs[0]).any(-1)
        del changed
    assert_params_equal(model, before)
    # by hand on the reference: rows ranked by cosine of W_i ⊙ γ with θ, shifted by −α‖W_i‖θ
    theta = r.probe_direction
    w = mlp_weights(model, 0).inputs[0].detach().clone()
    ln = ref.transformer.h[0].ln_2 if kind == "gpt2" else ref.model.layers[0].post_attention_layernorm
    cos = torch.nn.functional.cosine_similarity(w * ln.weight.detach(), theta[None], dim=-1)
    top = cos.topk(4).indices
    w[top] -= 0.5 * w[top].norm(dim=-1, keepdim=True) * theta[None]
    with surgery(model, r, k=4, alpha=0.5, layers=[0, 2]):
        torch.testing.assert_close(mlp_weights(model, 0).inputs[0].detach(), w)


def test_project_removes_the_subspace_from_mlp_outputs(setup: Any) -> None:
    model, ref, kind, r = setup
    before = snapshot(model)
    basis = r.toxic_subspace
    with project(model, r, rank=2, layers=[1, 2]) as edit:
        got = logits(model)
        assert edit.n_units == 2
    assert_params_equal(model, before)

    def remove(la: int) -> Any:
        b = basis[la, :2]
        return lambda out: out - (out @ b.T) @ b

    mods = [ref.transformer.h[la].mlp if kind == "gpt2" else ref.model.layers[la].mlp for la in (1, 2)]
    with fwd_hook(mods[0], remove(1)), fwd_hook(mods[1], remove(2)):
        expect = ref_logits(ref, model)
    torch.testing.assert_close(got, expect, atol=1e-4, rtol=0)
    with pytest.raises(ToxlensError, match="rank"):
        project(model, r, rank=4)


def test_project_top_frac_edits_only_the_located_value_vectors(setup: Any) -> None:
    model, _ref, _kind, r = setup
    before = snapshot(model)
    d_mlp = r.d_mlp
    count = -(-d_mlp // 4)  # ceil(0.25 * d_mlp)
    outs = {la: mlp_weights(model, la).out.detach().clone() for la in (1, 2)}
    with project(model, r, rank=2, layers=[1, 2], top_frac=0.25) as edit:
        for la in (1, 2):
            now = mlp_weights(model, la).out.detach()
            top = r.neuron_auroc[la].topk(count).indices
            b = r.toxic_subspace[la, :2].double()
            expect = outs[la].clone()
            rows = expect[top].double()
            expect[top] = (rows - (rows @ b.T) @ b).float()
            torch.testing.assert_close(now, expect, atol=1e-6, rtol=0)
            assert set((now != outs[la]).any(-1).nonzero().flatten().tolist()) <= set(top.tolist())
        assert edit.n_changed <= 2 * count * model.info.d_model
    assert_params_equal(model, before)
    # the control: as many rows per layer, drawn at random (seeded), the same rule
    with get_method("project-random")(model, r, {"rank": 2, "layers": [1], "top_frac": 0.25, "seed": 3}):
        changed = (mlp_weights(model, 1).out.detach() != outs[1]).any(-1).nonzero().flatten()
        assert 0 < len(changed) <= count
    assert_params_equal(model, before)
    # the control from the complement: none of the located rows changes; rows drawn from the others
    params = {"rank": 2, "layers": [1, 2], "top_frac": 0.25, "seed": 3, "neurons": "random-unlocated"}
    with get_method("project-random")(model, r, params):
        for la in (1, 2):
            now = mlp_weights(model, la).out.detach()
            top = set(r.neuron_auroc[la].topk(count).indices.tolist())
            changed_rows = set((now != outs[la]).any(-1).nonzero().flatten().tolist())
            assert 0 < len(changed_rows) <= count and not changed_rows & top
            b = r.toxic_subspace[la, :2].double()
            moved = sorted(changed_rows)
            rows = outs[la][moved].double()
            torch.testing.assert_close(now[moved], (rows - (rows @ b.T) @ b).float(), atol=1e-6, rtol=0)
    assert_params_equal(model, before)
    # the subspace control: the located rows, a random orthonormal basis (seeded), removed from each row
    params = {
        "rank": 2,
        "layers": [1],
        "top_frac": 0.25,
        "seed": 3,
        "neurons": "located",
        "subspace": "random",
    }
    with get_method("project-random")(model, r, params):
        now = mlp_weights(model, 1).out.detach()
        top = r.neuron_auroc[1].topk(count).indices
        assert set((now != outs[1]).any(-1).nonzero().flatten().tolist()) <= set(top.tolist())
        moved = now[top].double()
        # the removed part of every row lies in one rank-2 subspace, not the toxic one
        removed = outs[1][top].double() - moved
        assert torch.linalg.matrix_rank(removed, atol=1e-4) == 2
        toxic = r.toxic_subspace[1, :2].double()
        assert (removed - (removed @ toxic.T) @ toxic).norm() > 0.1 * removed.norm()
        # each row is now orthogonal to that subspace
        basis = torch.linalg.svd(removed, full_matrices=False).Vh[:2]
        assert (moved @ basis.T).abs().max() < 1e-4
    assert_params_equal(model, before)
    with pytest.raises(ToxlensError, match="random-unlocated"):
        project(model, r, rank=1, top_frac=0.75, neurons="random-unlocated")
    with pytest.raises(ToxlensError, match="neurons must be"):
        project(model, r, rank=1, top_frac=0.25, neurons="best")
    with pytest.raises(ToxlensError, match="subspace must be"):
        project(model, r, rank=1, top_frac=0.25, subspace="probe")
    for bad in (0, 1.5, True, "x"):
        with pytest.raises(ToxlensError, match="top_frac"):
            project(model, r, rank=1, top_frac=bad)


def test_subtract_removes_value_vectors_during_the_forward(setup: Any) -> None:
    model, ref, kind, r = setup
    flat = r.cos_probe.flatten().topk(2).indices.tolist()
    chosen = [(i // r.d_mlp, i % r.d_mlp) for i in flat]
    hooks_before = count_hooks(model.bridge)
    with subtract(model, r, n_neurons=2, scale=3.0) as edit:
        got = logits(model)
        assert edit.n_changed == 0 and edit.n_units == 2
    assert count_hooks(model.bridge) == hooks_before
    vecs = {la: torch.zeros(model.info.d_model) for la, _ in chosen}
    for la, n in chosen:
        vecs[la] += 3.0 * mlp_weights(model, la).out[n].detach()
    mods = {la: ref.transformer.h[la].mlp if kind == "gpt2" else ref.model.layers[la].mlp for la in vecs}
    from contextlib import ExitStack

    with ExitStack() as stack:
        for la, v in vecs.items():
            stack.enter_context(fwd_hook(mods[la], lambda out, v=v: out - v))
        expect = ref_logits(ref, model)
    torch.testing.assert_close(got, expect, atol=1e-4, rtol=0)


def test_registry_builds_every_method_and_validates_params(setup: Any) -> None:
    model, _, _, r = setup
    before = snapshot(model)
    assert set(EDIT_METHODS) == {
        "dampen",
        "dampen-random",
        "surgery",
        "surgery-random",
        "project",
        "project-random",
        "subtract",
        "subtract-random",
    }
    for name, method in EDIT_METHODS.items():
        with method(model, r) as edit:
            assert edit.active
            assert torch.isfinite(logits(model)).all(), name
        assert_params_equal(model, before)
    assert get_method("dampen").resolve({"min_auroc": 0.6})["min_auroc"] == 0.6
    with pytest.raises(ToxlensError, match="no parameter"):
        get_method("dampen").resolve({"alpha": 2})
    with pytest.raises(ToxlensError, match="expected int"):
        get_method("surgery").resolve({"k": "many"})
    with pytest.raises(ToxlensError, match="unknown edit method"):
        get_method("ablate-neurons")


def test_edits_refuse_a_ranking_of_another_model_and_nan(setup: Any, tmp_path: Any) -> None:
    model, _, kind, r = setup
    other, _ = tiny("llama" if kind == "gpt2" else "gpt2", tmp_path / "o")
    before = snapshot(other)
    for method in EDIT_METHODS.values():
        with pytest.raises(ToxlensError, match="neuron ranking is for"):
            method(other, r)
    assert_params_equal(other, before)
    before = snapshot(model)
    with pytest.raises(ToxlensError, match="NaN/inf"):
        surgery(model, r, k=2, alpha=float("inf"))
    assert_params_equal(model, before)
    bad = aura_alphas(r).clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ToxlensError, match="NaN/inf"):
        dampen(model, bad)
    assert_params_equal(model, before)


def _rows_changed(model: LensModel, layer: int, before: Tensor) -> set[int]:
    now = mlp_weights(model, layer).inputs[0].detach()
    return set((now != before).any(-1).nonzero().flatten().tolist())


def test_surgery_control_shifts_as_many_random_rows(setup: Any) -> None:
    model, _, _, r = setup
    before = snapshot(model)
    w = {la: mlp_weights(model, la).inputs[0].detach().clone() for la in (0, 2)}
    with surgery(model, r, k=4, alpha=0.5, layers=[0, 2]) as edit:
        located = {la: _rows_changed(model, la, w[la]) for la in w}
        n_located = edit.n_changed
    with surgery(model, r, k=4, alpha=0.5, layers=[0, 2], random_seed=3) as control:
        drawn = {la: _rows_changed(model, la, w[la]) for la in w}
        assert control.n_changed == n_located and control.n_units == 8
        assert "random rows seed=3" in control.description
    assert_params_equal(model, before)
    assert all(len(drawn[la]) == len(located[la]) == 4 for la in w)
    assert drawn != located
    with surgery(model, r, k=4, alpha=0.5, layers=[0, 2], random_seed=3):  # seeded: the same rows again
        assert {la: _rows_changed(model, la, w[la]) for la in w} == drawn


def test_subtract_control_uses_other_neurons_of_the_same_layer(setup: Any) -> None:
    model, _, _, r = setup
    with subtract(model, r, n_neurons=2, scale=3.0) as edit:
        located = edit.description
    with subtract(model, r, n_neurons=2, scale=3.0, random_seed=5) as control:
        drawn = control.description
        assert control.n_units == 2
    names = [x.strip(" ,") for x in located.split("(")[1].split("scale")[0].split(",") if x.strip(" ,")]
    others = [x.strip(" ,") for x in drawn.split("(")[1].split("scale")[0].split(",") if x.strip(" ,")]
    assert sorted(n.split(".")[0] for n in names) == sorted(n.split(".")[0] for n in others)  # same layers
    assert not set(names) & set(others)


def test_random_controls_mirror_their_edits_parameters(setup: Any) -> None:
    from interventions.conditions import build_conditions

    model, _, _, r = setup
    params = {"surgery": {"k": 3, "alpha": 0.25}, "subtract": {"scale": 2.0}, "subtract-random": {"seed": 7}}
    conds = build_conditions(
        model, ["surgery", "surgery-random", "subtract", "subtract-random"], edit_from=r, edit_params=params
    )
    got = {c.name: c.settings["params"] for c in conds}
    assert got["surgery-random"] == {**got["surgery"], "seed": 0}
    assert got["subtract-random"] == {**got["subtract"], "seed": 7}
