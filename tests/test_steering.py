"""Steering vectors (mean difference, probe direction, MLP value vectors, files) and the reversible
``steering`` edit, checked against raw torch hooks / weights of the untouched Hugging Face reference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from gen_reference import decoder_layers, hidden_states, hooked, post_hook, pre_hook
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from interventions import active_edits
from interventions.generate import generate
from interventions.sampling import Sampling
from interventions.steering import (
    Steer,
    load_vector,
    mean_diff_vector,
    probe_vector,
    save_vector,
    steering,
    value_vector,
)
from lens.errors import ToxlensError
from lens.hooks import count_hooks
from lens.model import LensModel
from lens.probe import Probe

KINDS = ["gpt2", "llama"]
TOXIC = ["you are a jerk", "what an idiot you are so", "idiot", "my jerk of a dog"]
BENIGN = ["you are a pal", "my friend", "what a very blue friend you are", "pal"]
TEXT = "the cat is very red and you are a jerk"

Pair = tuple[LensModel, Any, str]


@pytest.fixture(params=KINDS)
def pair(request: pytest.FixtureRequest, tiny_pair: Callable[..., tuple[LensModel, Any]]) -> Pair:
    model, ref = tiny_pair(request.param)
    return model, ref, request.param


def ids_of(model: LensModel, text: str, bos: bool = False) -> list[int]:
    ids = list(model.tokenizer(text)["input_ids"])
    return [model.tokenizer.bos_token_id, *ids] if bos else ids


def random_vector(d: int, seed: int, norm: float = 1.0) -> Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return norm * v / v.norm()


# -- mean_diff_vector ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("site", "pooling", "layer", "bos"),
    [("resid_pre", "mean", 1, False), ("resid_pre", "mean", 0, True), ("resid_post", "last", 2, False)],
)
def test_mean_diff_vector_by_hand(pair: Pair, site: str, pooling: str, layer: int, bos: bool) -> None:
    model, ref, _ = pair

    def pooled(text: str) -> Tensor:
        h = hidden_states(ref, ids_of(model, text, bos), layer, site)  # raw hook on the HF decoder layer
        return h.mean(0) if pooling == "mean" else h[-1]

    want = torch.stack([pooled(t) for t in TOXIC]).mean(0) - torch.stack([pooled(t) for t in BENIGN]).mean(0)
    got = mean_diff_vector(
        model, TOXIC, BENIGN, layer, site=site, pooling=pooling, batch_size=3, prepend_bos=bos
    )
    assert got.shape == (model.info.d_model,) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert want.norm() > 1e-2  # a real difference, not two equal means


def test_mean_diff_vector_rejects_bad_input(pair: Pair) -> None:
    model, _, _ = pair
    with pytest.raises(ToxlensError, match="unknown site 'resid_mid'"):
        mean_diff_vector(model, TOXIC, BENIGN, 1, site="resid_mid")
    with pytest.raises(ToxlensError, match="0 toxic"):
        mean_diff_vector(model, [], BENIGN, 1)
    with pytest.raises(ToxlensError, match="0 benign"):
        mean_diff_vector(model, TOXIC, [], 1)
    with pytest.raises(ToxlensError, match="layers"):
        mean_diff_vector(model, TOXIC, BENIGN, 3)
    with pytest.raises(ToxlensError, match="pooling"):
        mean_diff_vector(model, TOXIC, BENIGN, 1, pooling="max")


# -- probe_vector -----------------------------------------------------------------------------------
def test_probe_vector_is_the_unit_direction_of_weight_over_std() -> None:
    g = torch.Generator().manual_seed(0)
    w, mu = torch.randn(16, generator=g), torch.randn(16, generator=g)
    sd = torch.rand(16, generator=g) * 3 + 0.1
    probe = Probe(1, "resid_post", "mean", w, 0.3, mu, sd)
    v = probe_vector(probe)
    assert v.shape == (16,) and v.dtype == torch.float32
    assert float(v.norm()) == pytest.approx(1.0, abs=1e-6)
    raw = w / sd
    torch.testing.assert_close(v, raw / raw.norm(), atol=1e-6, rtol=0)
    assert float(torch.nn.functional.cosine_similarity(v, w, dim=0)) < 0.999  # not the raw weight
    # moving along it raises the probe logit by exactly |w / std| per unit
    x = torch.randn(5, 16, generator=g)
    torch.testing.assert_close(probe.logit(x + v) - probe.logit(x), raw.norm().expand(5), atol=1e-4, rtol=0)
    v.zero_()  # a copy: the probe is untouched
    torch.testing.assert_close(probe_vector(probe).norm(), torch.tensor(1.0))


# -- value_vector -----------------------------------------------------------------------------------
def test_value_vector_is_the_hf_output_weight_row(pair: Pair) -> None:
    model, ref, kind = pair
    for layer, neuron in [(1, 5), (0, 0), (2, 17)]:
        if kind == "llama":
            want = ref.model.layers[layer].mlp.down_proj.weight[:, neuron]
        else:
            want = ref.transformer.h[layer].mlp.c_proj.weight[neuron]
        got = value_vector(model, f"L{layer}.mlp:{neuron}")
        assert got.shape == (model.info.d_model,)
        assert torch.equal(got, want.detach().float())
    # it is a copy
    v = value_vector(model, "L1.mlp:5")
    v.add_(1.0)
    assert not torch.equal(value_vector(model, "L1.mlp:5"), v)


def test_value_vector_rejects_bad_names(pair: Pair) -> None:
    model, _, kind = pair
    d_mlp = 96 if kind == "llama" else 128
    for name, match in [
        ("L1.mlp", "expected 'L<layer>.mlp:<neuron>'"),
        ("L1.mlp:x", "expected 'L<layer>.mlp:<neuron>'"),
        ("L1.mlp:-1", "expected 'L<layer>.mlp:<neuron>'"),
        ("L1H2:3", "only MLP neurons"),
        (f"L1.mlp:{d_mlp}", f"neuron {d_mlp} does not exist"),
        ("L3.mlp:1", "L3"),
    ]:
        with pytest.raises(ToxlensError, match=match):
            value_vector(model, name)


# -- files --------------------------------------------------------------------------------------------
def test_save_and_load_vector_round_trip(pair: Pair, tmp_path: Path) -> None:
    model, _, _ = pair
    v = random_vector(model.info.d_model, 3, 2.5).double()
    out = save_vector(v, tmp_path / "deep" / "dir" / "v.safetensors", metadata={"source": "test"})
    assert out == tmp_path / "deep" / "dir" / "v.safetensors" and out.is_file()
    loaded = load_vector(out, model)
    assert loaded.dtype == torch.float32 and torch.equal(loaded, v.float())
    assert torch.equal(load_vector(out), v.float())  # no model: no check, same tensor
    with safe_open(str(out), "pt") as f:
        assert f.metadata() == {"source": "test"} and list(f.keys()) == ["vector"]
    assert [p.name for p in out.parent.iterdir()] == ["v.safetensors"]  # no temporary left behind


def test_vector_file_errors(pair: Pair, tmp_path: Path) -> None:
    model, _, _ = pair
    d = model.info.d_model
    with pytest.raises(ToxlensError, match="does not exist"):
        load_vector(tmp_path / "missing.safetensors", model)
    with pytest.raises(ToxlensError, match=r"\.safetensors"):
        save_vector(torch.ones(d), tmp_path / "v.pt")
    assert not (tmp_path / "v.pt").exists()
    wrong_key = tmp_path / "wrong.safetensors"
    save_file({"direction": torch.ones(d)}, str(wrong_key))
    with pytest.raises(ToxlensError, match=r"expected a tensor named 'vector', found \['direction'\]"):
        load_vector(wrong_key, model)
    small = save_vector(torch.ones(d - 1), tmp_path / "small.safetensors")
    with pytest.raises(ToxlensError, match=rf"shape \({d},\)"):
        load_vector(small, model)
    assert load_vector(small).shape == (d - 1,)  # without a model nothing is checked
    nan = torch.ones(d)
    nan[0] = float("nan")
    with pytest.raises(ToxlensError, match="NaN"):
        load_vector(save_vector(nan, tmp_path / "nan.safetensors"), model)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ToxlensError, match="not a readable safetensors file"):
        load_vector(garbage, model)


# -- the steering edit -------------------------------------------------------------------------------
def ref_logits(ref: Any, toks: list[int], regs: list[Callable[[], Any]]) -> Tensor:
    with torch.no_grad(), hooked(regs):
        out: Tensor = ref(torch.tensor([toks]), use_cache=False).logits[0]
    return out


def lens_logits(model: LensModel, toks: list[int]) -> Tensor:
    with torch.no_grad():
        out: Tensor = model.bridge(torch.tensor([toks]))[0]
    return out


def adder(v: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda x: x + v


def test_steering_edit_matches_raw_hooks_and_restores(pair: Pair) -> None:
    model, ref, _ = pair
    d = model.info.d_model
    toks = ids_of(model, TEXT)
    v1, v2, v3 = random_vector(d, 1, 2.0), random_vector(d, 2, 1.0), random_vector(d, 3, 3.0)
    lens_logits(model, toks)  # warm-up: TransformerLens wires its capture hooks on first use
    before, n_hooks = lens_logits(model, toks), count_hooks(model.bridge)
    torch.testing.assert_close(before, ref_logits(ref, toks, []), atol=1e-4, rtol=0)
    # positions is ignored outside generation: every position is steered
    steers = [
        Steer(v1, 1, 1.5, positions="prompt"),
        Steer(v2, 2, -2.0, positions="generated", site="resid_post"),
        Steer(v3, 0, 0.5, site="resid_post"),
    ]
    want = ref_logits(
        ref,
        toks,
        [
            pre_hook(ref, 1, adder(1.5 * v1)),
            post_hook(decoder_layers(ref)[2], adder(-2.0 * v2)),
            post_hook(decoder_layers(ref)[0], adder(0.5 * v3)),
        ],
    )
    assert (want - before).abs().max() > 0.1  # the steers matter
    with steering(model, steers) as edit:
        assert edit.active and active_edits(model) == [edit]
        torch.testing.assert_close(lens_logits(model, toks), want, atol=1e-4, rtol=0)
        with torch.no_grad():
            torch.testing.assert_close(
                model.final_logits(torch.tensor([toks]))[0], want[-1], atol=1e-4, rtol=0
            )
    assert not edit.active and active_edits(model) == []
    assert torch.equal(lens_logits(model, toks), before)  # bit-identical after undo
    assert count_hooks(model.bridge) == n_hooks
    # a handle, undone by hand; a second undo is a no-op
    one = Steer(v1, 2, 4.0)
    handle = steering(model, one)
    torch.testing.assert_close(
        lens_logits(model, toks),
        ref_logits(ref, toks, [pre_hook(ref, 2, adder(4.0 * v1))]),
        atol=1e-4,
        rtol=0,
    )
    handle.undo()
    handle.undo()
    assert torch.equal(lens_logits(model, toks), before)
    assert count_hooks(model.bridge) == n_hooks


def test_steering_edit_restores_when_the_body_raises(pair: Pair) -> None:
    model, _, _ = pair
    toks = ids_of(model, TEXT)
    lens_logits(model, toks)
    before, n_hooks = lens_logits(model, toks), count_hooks(model.bridge)
    with pytest.raises(KeyError), steering(model, Steer(random_vector(model.info.d_model, 4), 1, 3.0)):
        assert not torch.equal(lens_logits(model, toks), before)
        raise KeyError("boom")
    assert torch.equal(lens_logits(model, toks), before)
    assert count_hooks(model.bridge) == n_hooks and active_edits(model) == []


def test_steering_edit_applies_during_generation(pair: Pair) -> None:
    """The edit steers every position fed, with the KV cache, like a raw pre-hook on every full forward."""
    model, ref, _ = pair
    v = random_vector(model.info.d_model, 6, 3.0)
    prompts = ["the cat is very red", "you"]
    with steering(model, Steer(v, 1, 1.0)):
        gens = generate(model, prompts, 8, sampling=Sampling(greedy=True), stop_at_eos=False)
    for g in gens:
        seq = list(g.prompt_tokens)
        for _ in range(8):
            seq.append(int(ref_logits(ref, seq, [pre_hook(ref, 1, adder(v))])[-1].argmax()))
        assert g.tokens == seq[len(g.prompt_tokens) :]
    plain = generate(model, prompts, 8, sampling=Sampling(greedy=True), stop_at_eos=False)
    assert [g.tokens for g in plain] != [g.tokens for g in gens]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layer": 3}, r"layer must be an int in \[0, 3\)"),
        ({"site": "attn"}, "unknown steering site 'attn'"),
        ({"positions": "middle"}, "unknown steering positions 'middle'"),
        ({"scale": float("nan")}, "scale must be finite"),
        ({"vector": torch.ones(5)}, r"shape \(\d+,\)"),
        ({"vector": torch.full((48,), float("inf"))}, "NaN or inf|shape"),
    ],
)
def test_steering_edit_validates_before_touching_the_model(
    tiny_pair: Callable[..., tuple[LensModel, Any]], kwargs: dict[str, Any], match: str
) -> None:
    model, _ = tiny_pair("llama")
    toks = ids_of(model, TEXT)
    lens_logits(model, toks)
    before, n_hooks = lens_logits(model, toks), count_hooks(model.bridge)
    args: dict[str, Any] = {"vector": torch.ones(model.info.d_model), "layer": 1, "scale": 1.0, **kwargs}
    good = Steer(torch.ones(model.info.d_model), 0, 1.0)
    with pytest.raises(ToxlensError, match=match):
        steering(model, [good, Steer(**args)])  # the valid first steer is not attached either
    assert count_hooks(model.bridge) == n_hooks and active_edits(model) == []
    assert torch.equal(lens_logits(model, toks), before)


def test_steer_describe() -> None:
    s = Steer(torch.tensor([3.0, 4.0]), 2, -1.5, "generated", "resid_post")
    assert s.hook_name == "blocks.2.hook_resid_post"
    assert Steer(torch.ones(2), 0).hook_name == "blocks.0.hook_resid_pre"
    assert s.describe() == {
        "layer": 2,
        "scale": -1.5,
        "positions": "generated",
        "site": "resid_post",
        "vector_norm": 5.0,
    }
