"""Tiny GPT-2 / Llama models with a hand-planted toxicity circuit: by default head ``L1H2`` → MLP ``L2.mlp``.

Built from :func:`tiny.hf_model` (seeded random weights), then edited under ``torch.no_grad``. Five
residual-stream coordinates are reserved; first they are cleared in every embedding, position
embedding and unembedding, and no component except the chosen two writes them:

* ``MARK``  — the embeddings of the toxic marker words ("idiot", "jerk") have ``MARK = A``; every other
  token has 0;
* ``MOVED`` — written only by the chosen head: its query weights are zero, so it attends uniformly to
  the prefix; its value reads ``MARK`` and its output writes ``MOVED``: it carries "a toxic word occurred"
  to the last position (the marker word is never the last token of the prompts);
* ``TOX``   — written only by the chosen MLP: neuron 0 reads ``MOVED`` and writes ``TOX``; the
  unembedding maps ``TOX`` into the toxic tokens only (GPT-2 ties the embedding, so the marker words'
  input embeddings also carry ``TOX``, which no component reads);
* ``BIAS``  — the constant ``C`` in every token embedding. It dominates the norm of the residual stream,
  so LayerNorm / RMSNorm act almost linearly on the circuit's channels; in Llama it also feeds neuron
  0's SiLU gate, making the neuron linear in ``MOVED`` (Llama MLPs have no bias; GPT-2 uses the ``c_fc``
  bias, one in GELU's near-linear range). As an unembedding direction it adds the same logit to every
  token (GPT-2, tied) or nothing (Llama): no effect on the softmax;
* ``ZERO``  — always 0. GPT-2's LayerNorm centres, so the circuit reads ``ln(x)[MARK] − ln(x)[ZERO] =
  x[MARK] / σ(x)`` (likewise for ``MOVED``): exactly 0 on benign prompts, whatever the mean.

Every other head and MLP keeps its random weights with its output projection scaled by 0.01 (small, not
zero).

Why the chosen head and MLP must be the top two components, by both methods:

* the toxic-vs-benign difference of the metric (toxic log-mass at the last position) is carried by the
  serial path ``MARK --head--> MOVED --MLP--> TOX --unembedding--> toxic logits``; on benign prompts
  ``MOVED`` and neuron 0's input are 0, so patching either chosen component alone from the toxic run
  recreates the whole difference (score ≈ 1 each; the MLP a little more, as the patched-in ``TOX``
  then shares the final norm with no ``MOVED``);
* every other component writes none of the reserved channels and only 1% of a random projection
  elsewhere: patching it moves the residual stream by ~1% of a typical component output, and it cannot
  bring the marker to the last position, so its score is ≈ 0 (observed: below 1e-3);
* the path stays out of saturation (norms dominated by ``BIAS``, the neuron in its linear range, the
  toxic log-mass far from 0), so the gradient at the benign run is large along the path and the
  first-order estimates of the two chosen components are large and positive, the others ~0.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from tiny import TOXIC_WORDS, hf_model, make_tokenizer

from lens.loading import from_hf
from lens.model import LensModel

CHOSEN_HEAD = (1, 2)
CHOSEN_MLP = 2
MARK, MOVED, TOX, BIAS, ZERO = 0, 1, 2, 3, 4
RESERVED = [MARK, MOVED, TOX, BIAS, ZERO]
SMALL = 0.01

# Marker word never last; several lengths (exercises length grouping on the way).
PAIRS = [
    ("you are a idiot and so", "you are a friend and so"),
    ("he is a jerk but she is", "he is a pal but she is"),
    ("my idiot dog was red", "my friend dog was red"),
    ("the jerk and the cat", "the pal and the cat"),
    ("this is my idiot cat", "this is my friend cat"),
    ("jerk you are", "pal you are"),
]

# Circuit strengths (see the module docstring), per architecture.
STRENGTH: dict[str, dict[str, float]] = {
    "gpt2": {"A": 3.0, "C": 5.0, "W_V": 2.0, "W_O": 2.5, "W_IN": 1.0, "B_IN": 0.5, "W_OUT": 0.75, "B": 1.0},
    "llama": {"A": 3.0, "C": 5.0, "W_V": 2.0, "W_O": 2.5, "W_IN": 0.3, "G": 0.5, "W_OUT": 0.75, "B": 0.75},
}


def _token_ids(tok: Any, words: list[str]) -> list[int]:
    return [int(tok.convert_tokens_to_ids(w)) for w in words]


@torch.no_grad()
def _plant_gpt2(
    model: Any, toxic: list[int], k: dict[str, float], chosen_head: tuple[int, int], chosen_mlp: int
) -> None:
    tr, d = model.transformer, model.config.n_embd
    d_head = d // model.config.n_head
    layer, head = chosen_head
    hs = slice(head * d_head, (head + 1) * d_head)
    emb = tr.wte.weight  # tied with lm_head: also the unembedding
    emb[:, RESERVED] = 0.0
    tr.wpe.weight[:, RESERVED] = 0.0
    emb[toxic, MARK] = k["A"]
    emb[toxic, TOX] = k["B"]
    emb[:, BIAS] = k["C"]  # as unembedding: the same logit for every token, a softmax no-op
    for block in tr.h:
        for proj in (block.attn.c_proj, block.mlp.c_proj):  # Conv1D: weight [in, out]
            proj.weight.mul_(SMALL)
            proj.bias.mul_(SMALL)
            proj.weight[:, RESERVED] = 0.0  # nobody else writes the circuit's channels
            proj.bias[RESERVED] = 0.0
    attn = tr.h[layer].attn
    q_cols, v_cols = slice(hs.start, hs.stop), slice(2 * d + hs.start, 2 * d + hs.stop)
    attn.c_attn.weight[:, q_cols] = 0.0  # uniform attention over the prefix
    attn.c_attn.bias[q_cols] = 0.0
    attn.c_attn.weight[:, v_cols] = 0.0
    attn.c_attn.bias[v_cols] = 0.0
    # LayerNorm centres: ln(x)[MARK] - ln(x)[ZERO] = x[MARK] / std(x) removes the mean.
    attn.c_attn.weight[MARK, v_cols.start] = k["W_V"]
    attn.c_attn.weight[ZERO, v_cols.start] = -k["W_V"]
    attn.c_proj.weight[hs] = 0.0
    attn.c_proj.weight[hs.start, MOVED] = k["W_O"]
    mlp = tr.h[chosen_mlp].mlp
    mlp.c_fc.weight[:, 0] = 0.0
    mlp.c_fc.weight[MOVED, 0] = k["W_IN"]
    mlp.c_fc.weight[ZERO, 0] = -k["W_IN"]
    mlp.c_fc.bias[0] = k["B_IN"]
    mlp.c_proj.weight[0] = 0.0
    mlp.c_proj.weight[0, TOX] = k["W_OUT"]


@torch.no_grad()
def _plant_llama(
    model: Any, toxic: list[int], k: dict[str, float], chosen_head: tuple[int, int], chosen_mlp: int
) -> None:
    inner, cfg = model.model, model.config
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    layer, head = chosen_head
    hs = slice(head * d_head, (head + 1) * d_head)
    kv = head // group
    ks = slice(kv * d_head, (kv + 1) * d_head)
    emb = inner.embed_tokens.weight
    emb[:, RESERVED] = 0.0
    emb[:, BIAS] = k["C"]
    emb[toxic, MARK] = k["A"]
    model.lm_head.weight[:, RESERVED] = 0.0
    model.lm_head.weight[toxic, TOX] = k["B"]
    for block in inner.layers:
        for proj in (block.self_attn.o_proj, block.mlp.down_proj):  # Linear: weight [out, in]
            proj.weight.mul_(SMALL)
            proj.weight[RESERVED] = 0.0
    attn = inner.layers[layer].self_attn
    attn.q_proj.weight[hs] = 0.0  # uniform attention over the prefix
    attn.v_proj.weight[ks] = 0.0  # (this KV head is shared with the group's other, scaled-down heads)
    attn.v_proj.weight[ks.start, MARK] = k["W_V"]
    attn.o_proj.weight[:, hs] = 0.0
    attn.o_proj.weight[MOVED, hs.start] = k["W_O"]
    mlp = inner.layers[chosen_mlp].mlp
    mlp.gate_proj.weight[0] = 0.0
    mlp.gate_proj.weight[0, BIAS] = k["G"]
    mlp.up_proj.weight[0] = 0.0
    mlp.up_proj.weight[0, MOVED] = k["W_IN"]
    mlp.down_proj.weight[:, 0] = 0.0
    mlp.down_proj.weight[TOX, 0] = k["W_OUT"]


def chosen_names(head: tuple[int, int] = CHOSEN_HEAD, mlp: int = CHOSEN_MLP) -> set[str]:
    return {f"L{head[0]}H{head[1]}", f"L{mlp}.mlp"}


def planted_hf(
    kind: str, tok: Any, head: tuple[int, int] = CHOSEN_HEAD, mlp: int = CHOSEN_MLP, seed: int = 0
) -> Any:
    """The raw HF model (3 layers) with the circuit planted; deterministic for a given seed."""
    if not head[0] < mlp:
        raise ValueError("the head must sit in an earlier layer than the MLP it feeds")
    model = hf_model(kind, seed=seed, n_layers=3)
    toxic = _token_ids(tok, TOXIC_WORDS)
    plant = _plant_gpt2 if kind == "gpt2" else _plant_llama
    plant(model, toxic, STRENGTH[kind], head, mlp)
    return model.eval()


def planted(
    kind: str, tmp: Path, head: tuple[int, int] = CHOSEN_HEAD, mlp: int = CHOSEN_MLP, seed: int = 0
) -> tuple[LensModel, Any]:
    """(LensModel of the planted model, untouched HF copy with the same weights)."""
    tok = make_tokenizer(tmp / "tok")
    model = planted_hf(kind, tok, head, mlp, seed)
    reference = copy.deepcopy(model)
    return from_hf(model, tok, f"planted-{kind}"), reference
