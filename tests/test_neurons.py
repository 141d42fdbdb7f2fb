"""Localisation from labelled text: neuron activations, AUROC, a planted neuron, attribution, the result
object — checked against raw torch hooks on the untouched HF reference and against hand computation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from tiny import WORDS, tiny
from torch import Tensor, nn

from lens.errors import ToxlensError
from lens.hooks import attach, count_hooks, keepers
from lens.model import LensModel
from lens.probe import roc_auc
from lens.weights import head_out_weights, mlp_weights, neuron_act_name, parse_neuron
from patching.neuron_result import NeuronRanking
from patching.neurons import rank_from_texts, toxic_subspace
from patching.text_attribution import attribution_scores
from patching.text_stats import auroc_columns, collect_pooled

KINDS = ["gpt2", "llama"]
TOXIC = [
    "you are an idiot",
    "what a jerk",
    "the idiot is red",
    "she is a jerk and so",
    "idiot",
    "my jerk cat",
]
BENIGN = ["you are a friend", "what a pal", "the dog is red", "she is a friend and so", "pal", "my green cat"]
TEXTS = TOXIC + BENIGN
LABELS = [1] * len(TOXIC) + [0] * len(BENIGN)


def layer_module(ref: Any, kind: str, layer: int) -> nn.Module:
    return ref.transformer.h[layer] if kind == "gpt2" else ref.model.layers[layer]


def out_proj(ref: Any, kind: str, layer: int) -> nn.Module:
    mlp = layer_module(ref, kind, layer).mlp
    return mlp.c_proj if kind == "gpt2" else mlp.down_proj


def token_id(model: LensModel, word: str) -> int:
    return model.tokenize(word)[0]


@pytest.mark.parametrize("kind", KINDS)
def test_neuron_activation_is_the_input_of_the_output_projection(kind: str, tmp_path: Any) -> None:
    model, ref = tiny(kind, tmp_path)
    toks = torch.tensor([model.tokenize("you are a very red idiot")])
    seen: dict[str, Tensor] = {}
    got: dict[int, Tensor] = {}
    handles = [
        out_proj(ref, kind, la).register_forward_pre_hook(
            lambda _m, args, la=la: got.__setitem__(la, args[0].detach().clone())
        )
        for la in range(model.n_layers)
    ]
    try:
        ref(toks)
    finally:
        for h in handles:
            h.remove()
    with (
        torch.no_grad(),
        attach(model.bridge, keepers(seen, [neuron_act_name(la) for la in range(model.n_layers)])),
    ):
        model.bridge(toks)
    for la in range(model.n_layers):
        torch.testing.assert_close(seen[neuron_act_name(la)], got[la], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_mlp_weights_are_views_of_the_real_parameters(kind: str, tmp_path: Any) -> None:
    model, _ = tiny(kind, tmp_path)
    w = mlp_weights(model, 1)
    hf = out_proj(model.bridge.original_model, kind, 1)
    # value vector i is what neuron i adds to the MLP output per unit of activation
    x = torch.zeros(1, 1, w.d_mlp)
    x[0, 0, 5] = 1.0
    bias = hf.bias if getattr(hf, "bias", None) is not None else 0
    torch.testing.assert_close(hf(x)[0, 0] - bias, w.out[5].detach())
    assert w.gated == (kind == "llama") and len(w.inputs) == (2 if kind == "llama" else 1)
    assert head_out_weights(model, 0).shape == (model.n_heads, model.info.d_head, model.info.d_model)
    assert parse_neuron("L2.mlp.n7", model) == (2, 7) and parse_neuron("L2.mlp:7") == (2, 7)
    for bad in ("L9.mlp.n1", f"L0.mlp.n{w.d_mlp}", "L0H1", "mlp.n3"):
        with pytest.raises(ToxlensError):
            parse_neuron(bad, model)


def test_auroc_columns_matches_pairwise_definition() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (40, 7), generator=gen).float()  # many ties
    y = (torch.rand(40, generator=gen) > 0.4).long()
    got = auroc_columns(x, y, chunk=3)
    for j in range(7):
        assert got[j].item() == pytest.approx(roc_auc(x[:, j], y), abs=1e-6)
    with pytest.raises(ToxlensError, match="both classes"):
        auroc_columns(x, torch.ones(40, dtype=torch.long))


@pytest.mark.parametrize("kind", KINDS)
def test_pooled_stats_equal_per_text_forwards(kind: str, tmp_path: Any) -> None:
    model, _ = tiny(kind, tmp_path)
    stats = collect_pooled(model, TEXTS, "max", batch_size=3, baseline=torch.tensor(LABELS) == 0)
    acts_sum = torch.zeros_like(stats.baseline_neurons, dtype=torch.float64)
    n_tok = 0
    for i, text in enumerate(TEXTS):
        seen: dict[str, Tensor] = {}
        names = [neuron_act_name(la) for la in range(model.n_layers)]
        with torch.no_grad(), attach(model.bridge, keepers(seen, names)):
            model.bridge(torch.tensor([model.tokenize(text)]))
        for la in range(model.n_layers):
            a = seen[neuron_act_name(la)][0]
            torch.testing.assert_close(stats.neurons[i, la], a.amax(0), atol=1e-5, rtol=0)
            if LABELS[i] == 0:
                acts_sum[la] += a.double().sum(0)
        n_tok += len(model.tokenize(text)) if LABELS[i] == 0 else 0
    torch.testing.assert_close(stats.baseline_neurons, (acts_sum / n_tok).float(), atol=1e-5, rtol=0)


def plant_neuron(model: LensModel, layer: int, neuron: int, words: list[str], texts: list[str]) -> None:
    """Make ``neuron`` a detector of ``words``: its input rows point along a logistic-regression direction
    separating the MLP input at those tokens from every other token of ``texts``, with a bias (GPT-2) that keeps it off elsewhere."""
    seen: dict[str, Tensor] = {}
    on, off = [], []
    wanted = {token_id(model, w) for w in words}
    for text in texts:
        ids = model.tokenize(text)
        with torch.no_grad(), attach(model.bridge, keepers(seen, [f"blocks.{layer}.mlp.hook_in"])):
            model.bridge(torch.tensor([ids]))
        x = seen[f"blocks.{layer}.mlp.hook_in"][0]
        for pos, tok in enumerate(ids):
            (on if tok in wanted else off).append(x[pos])
    on_t, off_t = torch.stack(on), torch.stack(off)
    from sklearn.linear_model import LogisticRegression

    x_all = torch.cat([on_t, off_t]).double().numpy()
    y_all = np.r_[np.ones(len(on_t)), np.zeros(len(off_t))]
    d = torch.tensor(LogisticRegression(C=1e4, max_iter=5000).fit(x_all, y_all).coef_[0]).float()
    d = d / d.norm()
    lo, hi = float((off_t @ d).max()), float((on_t @ d).min())
    assert hi > lo, "the planted direction must separate the tokens"
    w = mlp_weights(model, layer)
    scale = 20.0 / (hi - lo)
    with torch.no_grad():
        for inp, bias in zip(w.inputs, w.input_biases):
            inp[neuron] = scale * d
            if bias is not None:
                bias[neuron] = -scale * (lo + hi) / 2


def random_texts(n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` toxic texts (random filler words with one toxic marker word inserted) and ``n`` non-toxic
    texts (random filler words with a benign marker word inserted)."""
    rng = np.random.default_rng(seed)
    filler = [w for w in WORDS if w not in ("idiot", "jerk", "friend", "pal")]
    texts, labels = [], []
    for label, markers in ((1, ["idiot", "jerk"]), (0, ["friend", "pal"])):
        for _ in range(n):
            words = list(rng.choice(filler, size=int(rng.integers(3, 8))))
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(markers)))
            texts.append(" ".join(words))
            labels.append(label)
    return texts, labels


@pytest.mark.parametrize("kind", KINDS)
def test_planted_neuron_ranks_first(kind: str, tmp_path: Any) -> None:
    model, _ = tiny(kind, tmp_path, n_layers=2)
    texts, labels = random_texts(40, seed=0)
    plant_neuron(model, 1, 11, ["idiot", "jerk"], texts)
    r = rank_from_texts(model, texts, labels, batch_size=8, n_attribution=0)
    assert r.top_k(1)["component"].iloc[0] == "L1.mlp.n11"
    assert r.neuron_auroc[1, 11] == 1.0
    assert r.metadata["labels"].startswith("the 0/1 labels given by the caller")


@pytest.mark.parametrize("kind", KINDS)
def test_attribution_matches_raw_autograd(kind: str, tmp_path: Any) -> None:
    """attr = Σ_pos ∂T/∂a · (a − base), recomputed with raw HF hooks and autograd."""
    model, ref = tiny(kind, tmp_path)
    probe = rank_from_texts(model, TEXTS, LABELS, n_attribution=0).metadata  # noqa: F841
    gen = torch.Generator().manual_seed(1)
    nl, d_mlp = model.n_layers, mlp_weights(model, 0).d_mlp
    base_n = torch.randn(nl, d_mlp, generator=gen)
    base_z = torch.randn(nl, model.n_heads, model.info.d_head, generator=gen)
    base_mlp = torch.randn(nl, model.info.d_model, generator=gen)
    ids = torch.tensor([2, 5, 7])
    texts = ["you are an idiot", "what a jerk"]
    got = attribution_scores(model, texts, base_n, base_z, base_mlp, "toxic-mass", toxic_ids=ids)
    expect = torch.zeros(nl, d_mlp, dtype=torch.float64)
    expect_mlp = torch.zeros(nl, dtype=torch.float64)
    acts: dict[str, Tensor] = {}
    for text in texts:
        handles = []
        for la in range(nl):
            handles.append(
                out_proj(ref, kind, la).register_forward_pre_hook(
                    lambda _m, args, la=la: acts.__setitem__(f"n{la}", args[0])
                )
            )
            handles.append(
                layer_module(ref, kind, la).mlp.register_forward_hook(
                    lambda _m, _a, out, la=la: acts.__setitem__(f"m{la}", out)
                )
            )
        try:
            logits = ref(torch.tensor([model.tokenize(text)])).logits
        finally:
            for h in handles:
                h.remove()
        target = torch.logsumexp(torch.log_softmax(logits.float(), -1)[..., ids], -1).sum()
        keys = [f"n{la}" for la in range(nl)] + [f"m{la}" for la in range(nl)]
        grads = torch.autograd.grad(target, [acts[k] for k in keys])
        g = dict(zip(keys, grads))
        for la in range(nl):
            expect[la] += (g[f"n{la}"] * (acts[f"n{la}"].detach() - base_n[la])).sum((0, 1)).double()
            expect_mlp[la] += (g[f"m{la}"] * (acts[f"m{la}"].detach() - base_mlp[la])).sum().double()
    torch.testing.assert_close(got.neurons.double(), expect / len(texts), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.mlps.double(), expect_mlp / len(texts), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_ranking_roundtrip_tables_and_hygiene(kind: str, tmp_path: Any) -> None:
    model, _ = tiny(kind, tmp_path)
    model.bridge(torch.tensor([[3, 4]]))
    before = count_hooks(model.bridge)
    ids = torch.tensor([token_id(model, "idiot"), token_id(model, "jerk")])
    r = rank_from_texts(model, TEXTS, LABELS, batch_size=5, n_attribution=4, toxic_ids=ids)
    assert count_hooks(model.bridge) == before
    df = r.to_dataframe()
    assert list(df.columns) == [
        "component",
        "layer",
        "neuron",
        "auroc",
        "effect_size",
        "cos_probe",
        "toxic_logit_mass",
        "attribution",
        "top_tokens",
        "rank",
    ]
    assert len(df) == model.n_layers * r.d_mlp and df["rank"].tolist() == list(range(1, len(df) + 1))
    assert df["auroc"].is_monotonic_decreasing
    comps = r.components_dataframe()
    assert len(comps) == model.n_layers * (model.n_heads + 1)
    assert set(comps["kind"]) == {"head", "mlp"}
    r.save(tmp_path / "r")
    r2 = NeuronRanking.load(tmp_path / "r")
    for name in (
        "neuron_auroc",
        "cos_probe",
        "top_token_ids",
        "neuron_attr",
        "toxic_subspace",
        "probe_direction",
    ):
        assert torch.equal(getattr(r, name), getattr(r2, name)), name
    assert r2.top_k(3).equals(r.top_k(3))
    # the subspace rows are orthonormal
    s = r.toxic_subspace[1]
    torch.testing.assert_close(s @ s.T, torch.eye(s.shape[0]), atol=1e-5, rtol=0)
    # cosine column by hand
    v = mlp_weights(model, 2).out[3].detach()
    assert r.cos_probe[2, 3].item() == pytest.approx(
        float(v @ r.probe_direction / v.norm() / r.probe_direction.norm()), abs=1e-5
    )


def test_toxic_subspace_is_centred_and_spans_the_class_difference() -> None:
    # planted: non-toxic outputs share a large mean along e0; toxic ones add e1 (plus that mean, rescaled)
    gen = torch.Generator().manual_seed(0)
    n, d = 40, 6
    y = torch.tensor([1] * n + [0] * n)
    e = torch.eye(d)
    base = 10 * e[0] + 0.01 * torch.randn(2 * n, d, generator=gen)
    scale = torch.where(y == 1, 1.5, 1.0)[:, None]  # toxic texts' mean output is longer along e0
    x = base * scale + (y == 1).float()[:, None] * (2 + torch.rand(2 * n, 1, generator=gen)) * e[1]
    s = toxic_subspace(x[:, None, :], y, 1)[0, 0]
    assert abs(float(s @ e[1])) > 0.99  # the toxic direction, not the shared mean
    mean = x[y == 0].mean(0)
    assert abs(float(s @ mean / mean.norm())) < 1e-6  # orthogonal to the non-toxic mean


def test_ranking_rejects_bad_labels(tmp_path: Any) -> None:
    model, _ = tiny("gpt2", tmp_path)
    with pytest.raises(ToxlensError, match="both classes"):
        rank_from_texts(model, TEXTS, [1] * len(TEXTS))
    with pytest.raises(ToxlensError, match="one label per text"):
        rank_from_texts(model, TEXTS, LABELS[:-1])
    with pytest.raises(ToxlensError, match="toxic_ids"):
        rank_from_texts(model, TEXTS, LABELS, toxic_ids=torch.tensor([10_000]))
    with pytest.raises(ToxlensError, match="pooling"):
        rank_from_texts(model, TEXTS, LABELS, pooling="median")
    with pytest.raises(ToxlensError, match="no neuron ranking"):
        NeuronRanking.load(tmp_path)
    assert np.isfinite(0.0)
