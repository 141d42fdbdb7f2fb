"""Tiny GPT-2 / Llama models with a hand-planted toxicity circuit: head ``L1H2`` → MLP ``L2.mlp``.

Built from :func:`tiny.hf_model` (seeded random weights), then edited under ``torch.no_grad``. Four
residual-stream coordinates are reserved (their rows/columns are cleared everywhere first):

* ``MARK``  — the embeddings of the toxic marker words ("idiot", "jerk") have ``MARK = A``; every other
  token and every position embedding has 0;
* ``MOVED`` — written only by the chosen head: its query weights are zero, so it attends uniformly to
  the prefix, its value reads ``MARK`` and its output writes ``MOVED``: it carries "a toxic word occurred
  somewhere" to the last position (the marker is never the last token of the prompts);
* ``TOX``   — written only by the chosen MLP: one neuron reads ``MOVED`` and writes ``TOX``; the
  unembedding reads ``TOX`` only into the toxic tokens (GPT-2 ties the embedding, so the marker words'
  input embeddings also carry ``TOX``; no head reads it strongly, see below);
* ``BIAS``  (Llama only) — constant 1 in every embedding, feeding the neuron's SiLU gate so the
  neuron is *linear* in ``MOVED`` (Llama MLPs have no bias); GPT-2 uses the ``c_fc`` bias instead.

Every other head and MLP keeps its random weights but has its output projection scaled by 0.01.

Why ``L1H2`` and ``L2.mlp`` must be the top two components, by both methods:

* the toxic-vs-benign difference of the metric (toxic log-mass at the last position) is carried by the
  serial path ``MARK --L1H2--> MOVED --L2.mlp--> TOX --unembed--> toxic logits``; the chosen
  head is the only strong writer of ``MOVED`` and the chosen MLP the only strong writer of ``TOX``;
  each alone, patched from the toxic run, recreates (most of) the whole difference: score ≈ 1;
* any other component's output is 1% of a random projection: patching it changes the residual stream
  by ~1% of a typical component output, so its score is ≈ 0 (it can neither create ``MOVED``/``TOX``
  nor move the marker to the last position with more than 1% strength);
* the path is kept out of saturation for attribution patching: the neuron sits in its linear regime on
  benign prompts (GELU at a positive pre-activation / SiLU gate fed by the constant channel), so the
  gradient at the benign run is large along the path and the first-order estimates of the two chosen
  components are large and positive, while the others stay ~1% of that.
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
CHOSEN = {f"L{CHOSEN_HEAD[0]}H{CHOSEN_HEAD[1]}", f"L{CHOSEN_MLP}.mlp"}
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
def _plant_gpt2(model: Any, toxic: list[int], k: dict[str, float]) -> None:
    tr, d = model.transformer, model.config.n_embd
    d_head = d // model.config.n_head
    layer, head = CHOSEN_HEAD
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
    mlp = tr.h[CHOSEN_MLP].mlp
    mlp.c_fc.weight[:, 0] = 0.0
    mlp.c_fc.weight[MOVED, 0] = k["W_IN"]
    mlp.c_fc.weight[ZERO, 0] = -k["W_IN"]
    mlp.c_fc.bias[0] = k["B_IN"]
    mlp.c_proj.weight[0] = 0.0
    mlp.c_proj.weight[0, TOX] = k["W_OUT"]


@torch.no_grad()
def _plant_llama(model: Any, toxic: list[int], k: dict[str, float]) -> None:
    inner, cfg = model.model, model.config
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    layer, head = CHOSEN_HEAD
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
    mlp = inner.layers[CHOSEN_MLP].mlp
    mlp.gate_proj.weight[0] = 0.0
    mlp.gate_proj.weight[0, BIAS] = k["G"]
    mlp.up_proj.weight[0] = 0.0
    mlp.up_proj.weight[0, MOVED] = k["W_IN"]
    mlp.down_proj.weight[:, 0] = 0.0
    mlp.down_proj.weight[TOX, 0] = k["W_OUT"]


def planted_hf(kind: str, tok: Any, seed: int = 0) -> Any:
    """The raw HF model with the circuit planted (deterministic for a given seed)."""
    model = hf_model(kind, seed=seed, n_layers=3)
    toxic = _token_ids(tok, TOXIC_WORDS)
    (_plant_gpt2 if kind == "gpt2" else _plant_llama)(model, toxic, STRENGTH[kind])
    return model.eval()


def planted(kind: str, tmp: Path, seed: int = 0) -> tuple[LensModel, Any]:
    """(LensModel of the planted model, untouched HF copy with the same weights)."""
    tok = make_tokenizer(tmp / "tok")
    model = planted_hf(kind, tok, seed)
    reference = copy.deepcopy(model)
    return from_hf(model, tok, f"planted-{kind}"), reference
