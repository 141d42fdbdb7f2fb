"""RelP and integrated gradients against independent references (``tests/reference_gradients.py``).

* RelP = plain gradient × Δ on the raw HF model whose modules were rewritten with the LRP rules;
* IG (inputs) = raw-HF gradients averaged over interpolated token embeddings, one forward per step;
* IG (activations), m → large, approaches the exact integral: activation patching of each MLP;
* the forward pass under the RelP rules is unchanged; every hook is removed, also after an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from reference import activation_reference, attribution_reference
from reference_gradients import ig_reference, lrp_modules
from test_hygiene import Boom, FailingMetric
from test_reference import KINDS, assert_matches, prepare_case, ref_spread
from tiny import tiny

from lens.errors import ToxlensError
from lens.hooks import attach, count_hooks
from lens.model import LensModel
from patching.attribution import attribution_patching
from patching.ig import integrated_gradients
from patching.relp import relevance_patching, relp_hooks

TARGETS = ["components", "resid_by_pos", "heads_by_pos"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[LensModel, Any]]:
    cache: dict[str, tuple[LensModel, Any]] = {}

    def get(kind: str) -> tuple[LensModel, Any]:
        if kind not in cache:
            cache[kind] = tiny(kind, tmp_path_factory.mktemp(f"grad-{kind}"))
        return cache[kind]

    return get


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind", KINDS)
def test_relp_equals_lrp_rewritten_raw_model(models: Any, kind: str, target: str) -> None:
    lm, ref, pairs, raw, metric = prepare_case(models, kind, target)
    result = relevance_patching(lm, pairs, metric, target)
    with lrp_modules(ref):
        expected = attribution_reference(ref, raw, metric.ids.tolist(), target)
    assert_matches(result, expected)
    assert ref_spread(expected) > 1e-2
    # ... and RelP is not plain attribution: the rules change the estimate.
    plain = attribution_patching(lm, pairs, metric, target)
    assert float((plain.patched - result.patched).abs().max()) > 1e-3
    assert result.metadata["rules"][:2] == ["LN-rule", "identity-rule"]
    assert ("half-rule" in result.metadata["rules"]) == (kind == "llama")


@pytest.mark.parametrize("kind", KINDS)
def test_relp_rules_leave_the_forward_unchanged(models: Any, kind: str) -> None:
    lm, _ref, pairs, _raw, _metric = prepare_case(models, kind, "components")
    tokens = pairs.tokens(pairs.length_groups()[5], "toxic")
    with torch.no_grad():
        plain = lm.final_logits(tokens)
    for ah in (False, True):
        with torch.enable_grad(), attach(lm.bridge, relp_hooks(lm, ah_rule=ah)):
            ruled = lm.final_logits(tokens)
        # Equal up to float rounding: with a hook on hook_scale the bridge rebuilds the norm's output
        # from the hooked values instead of calling HF's fused forward.
        torch.testing.assert_close(ruled.detach(), plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_relp_ah_rule_changes_only_what_flows_through_patterns(models: Any, kind: str) -> None:
    lm, _ref, pairs, _raw, metric = prepare_case(models, kind, "components")
    a = relevance_patching(lm, pairs, metric, "components")
    b = relevance_patching(lm, pairs, metric, "components", ah_rule=True)
    torch.testing.assert_close(a.m_benign, b.m_benign, atol=0, rtol=0)
    assert float((a.patched - b.patched).abs().max()) > 1e-4
    # The last layer's components reach the output without any attention pattern in between.
    last = [i for i, n in enumerate(a.names()) if n.startswith(f"L{lm.n_layers - 1}")]
    torch.testing.assert_close(a.patched[:, last], b.patched[:, last], atol=1e-6, rtol=0)
    assert b.metadata["rules"][-1] == "AH-rule"


@pytest.mark.parametrize("target", ["components", "resid_by_pos"])
@pytest.mark.parametrize("kind", KINDS)
def test_ig_inputs_equals_raw_embedding_interpolation(models: Any, kind: str, target: str) -> None:
    lm, ref, pairs, raw, metric = prepare_case(models, kind, target)
    for steps, max_rows in ((3, 64), (4, 1)):
        result = integrated_gradients(lm, pairs, metric, target, steps=steps, max_rows=max_rows)
        expected = ig_reference(ref, raw, metric.ids.tolist(), target, steps)
        assert_matches(result, expected)
        assert result.metadata["steps"] == steps and result.metadata["mode"] == "inputs"


@pytest.mark.parametrize("kind", KINDS)
def test_ig_activations_converges_to_activation_patching(models: Any, kind: str) -> None:
    lm, ref, pairs, raw, metric = prepare_case(models, kind, "mlps")
    exact = activation_reference(ref, raw, metric.ids.tolist(), "mlps").patched
    errors = []
    for steps in (1, 4, 32):
        ig = integrated_gradients(lm, pairs, metric, "mlps", steps=steps, mode="activations")
        errors.append(float((ig.patched.double() - exact).abs().max()))
    assert errors[0] > 1e-3  # one step (the midpoint gradient) is only an approximation ...
    assert errors[2] < errors[1] < errors[0]  # ... that converges
    assert errors[2] < 1e-4, errors


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_methods_remove_their_hooks_also_on_error(models: Any, kind: str) -> None:
    lm, _ref, pairs, _raw, metric = prepare_case(models, kind, "components")
    before = count_hooks(lm.bridge)

    for run in (
        lambda m: relevance_patching(lm, pairs, m, "components", ah_rule=True),
        lambda m: integrated_gradients(lm, pairs, m, "components", steps=2),
        lambda m: integrated_gradients(lm, pairs, m, "components", steps=2, mode="activations"),
    ):
        run(metric)
        assert count_hooks(lm.bridge) == before
        with pytest.raises(Boom):  # the second metric call: inside the gradient forward, hooks attached
            run(FailingMetric(metric.ids.tolist(), fail_at=2))
        assert count_hooks(lm.bridge) == before


def test_ig_refuses_bad_settings(models: Any) -> None:
    lm, _ref, pairs, _raw, metric = prepare_case(models, "gpt2", "components")
    with pytest.raises(ToxlensError, match="unknown IG mode 'outputs'"):
        integrated_gradients(lm, pairs, metric, steps=2, mode="outputs")
    with pytest.raises(ToxlensError, match="steps >= 1, got 0"):
        integrated_gradients(lm, pairs, metric, steps=0)
