"""An independent reference for generation, steering, the probe monitor and rollback (tests only).

Uses nothing from toxlens or TransformerLens: only the raw Hugging Face model, plain ``torch`` forward
hooks / pre-hooks (each removed in ``finally``) and, for every token fed, one **full forward of the whole
sequence without a KV cache**. Nothing is cached between steps except the token list itself and, per
position, the corrective-steering scale that position was fed with (a KV cache keeps exactly that).

Sites, in the raw model's own modules:

* ``resid_pre`` of layer ``l``: the ``hidden_states`` input of decoder layer ``l``
  (GPT-2 ``transformer.h[l]``, Llama ``model.layers[l]``);
* ``resid_post`` of layer ``l``: the output of decoder layer ``l``;
* MLP ``l``: the output of ``<decoder layer l>.mlp``.

The rollback rules are the ones documented in ``interventions/generate.py``, written out again here
over full recomputes: a score ``>= threshold`` on a generated token rolls back to the latest earlier
position whose score is ``< safe_threshold`` (the end of the prompt always qualifies; the tiny
word-level tokenizer makes every token a word start), the token that started the discarded span is
forbidden there, and without corrective steering the next token is drawn again from the (recomputed)
logits of the kept prefix; with corrective steering the last kept token is fed again with
``-steer_scale * direction`` added at ``resid_pre`` of the steer layer, and so are the next
``steer_tokens - 1`` tokens. A token fed again keeps the score of its first feed (and is never
judged again); the prompt's scores are those of the first forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


# ---------------------------------------------------------------------------------------------
# The raw model's modules
def decoder_layers(hf: Any) -> Any:
    return hf.transformer.h if hasattr(hf, "transformer") else hf.model.layers


def mlp_module(hf: Any, layer: int) -> nn.Module:
    module: nn.Module = decoder_layers(hf)[layer].mlp
    return module


from reference import _hidden, _with_hidden, hooked  # noqa: E402  (the same raw-hook plumbing)


def _out(out: Any) -> Tensor:
    hidden: Tensor = out[0] if isinstance(out, tuple) else out
    return hidden


def _replace_out(out: Any, new: Tensor) -> Any:
    return (new, *out[1:]) if isinstance(out, tuple) else new


def pre_hook(hf: Any, layer: int, fn: Callable[[Tensor], Tensor | None]) -> Callable[[], Any]:
    """Registration of ``fn`` on the residual entering decoder layer ``layer`` (``None``: read only)."""

    def hook(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        new = fn(_hidden(args, kwargs))
        return None if new is None else _with_hidden(args, kwargs, new)

    block = decoder_layers(hf)[layer]
    return lambda: block.register_forward_pre_hook(hook, with_kwargs=True)


def post_hook(module: nn.Module, fn: Callable[[Tensor], Tensor | None]) -> Callable[[], Any]:
    """Registration of ``fn`` on the output of ``module`` (``None``: read only)."""

    def hook(_m: Any, _args: Any, out: Any) -> Any:
        new = fn(_out(out))
        return None if new is None else _replace_out(out, new)

    return lambda: module.register_forward_hook(hook)


# ---------------------------------------------------------------------------------------------
# Plain descriptions (no toxlens types)
@dataclass(frozen=True)
class RSteer:
    vector: Tensor
    layer: int
    scale: float
    positions: str  # prompt | generated | all
    site: str  # resid_pre | resid_post


@dataclass(frozen=True)
class RProbe:
    layer: int
    hook: str  # resid_pre | resid_post
    weight: Tensor
    bias: float
    mean: Tensor
    std: Tensor

    def scores(self, hidden: Tensor) -> Tensor:
        """``sigmoid(((h - mean) / std) . w + b)`` in float64, one per row of ``hidden``."""
        h = hidden.double()
        logit = ((h - self.mean.double()) / self.std.double()) @ self.weight.double() + self.bias
        return torch.sigmoid(logit)

    @property
    def direction(self) -> Tensor:
        raw = self.weight.double() / self.std.double()
        return (raw / raw.norm()).float()


@dataclass
class Config:
    """Everything that decides what is drawn (mirrors the options of ``generate``)."""

    greedy: bool = True
    temperature: float = 1.0
    steers: Sequence[RSteer] = ()
    probe: RProbe | None = None
    threshold: float | None = None
    safe_threshold: float = 0.3
    budget: int = 4
    on_budget: str = "stop"
    steer_scale: float = 0.0
    steer_tokens: int = 8
    steer_layer: int | None = None
    forbid_token: bool = True
    eos: int | None = None
    stop_at_eos: bool = False
    zero_mlps: Sequence[int] = ()


@dataclass
class RefGen:
    tokens: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    prompt_scores: list[float] = field(default_factory=list)
    rollbacks: list[tuple[int, int, int, int | None]] = field(
        default_factory=list
    )  # at, to, discarded, forb.
    forward_tokens: int = 0
    recomputed: int = 0
    finish: str = ""


# ---------------------------------------------------------------------------------------------
# One full forward
@torch.no_grad()
def full_forward(
    hf: Any, ids: Sequence[int], n_prompt: int, cfg: Config, correction: Sequence[float] = ()
) -> tuple[Tensor, Tensor | None]:
    """Logits at the last position and the probe's score at every position (``None`` without probe)
    of one full, cache-free forward of ``ids``. ``correction[p]`` is the corrective-steering scale the
    token at position ``p`` is fed with."""
    n = len(ids)
    where = {
        "prompt": torch.arange(n) < n_prompt,
        "generated": torch.arange(n) >= n_prompt,
        "all": torch.ones(n, dtype=torch.bool),
    }
    regs: list[Callable[[], Any]] = []
    for s in cfg.steers:
        add = s.scale * s.vector.float()[None, :] * where[s.positions].float()[:, None]

        def steer(x: Tensor, add: Tensor = add) -> Tensor:
            return x + add.to(x.dtype)

        if s.site == "resid_pre":
            regs.append(pre_hook(hf, s.layer, steer))
        else:
            regs.append(post_hook(decoder_layers(hf)[s.layer], steer))
    corr = torch.tensor(list(correction) + [0.0] * (n - len(correction)), dtype=torch.float32)
    if cfg.probe is not None and bool(corr.any()):
        n_layers = len(decoder_layers(hf))
        default = (
            cfg.probe.layer + 1 if cfg.probe.layer + 1 < n_layers else cfg.probe.layer
        )  # the block after the probe's
        layer = default if cfg.steer_layer is None else cfg.steer_layer
        sub = corr[:, None] * cfg.probe.direction[None, :]

        def correct(x: Tensor, sub: Tensor = sub) -> Tensor:
            return x - sub.to(x.dtype)

        regs.append(pre_hook(hf, layer, correct))
    for layer in cfg.zero_mlps:
        regs.append(post_hook(mlp_module(hf, layer), torch.zeros_like))
    seen: dict[str, Tensor] = {}
    if cfg.probe is not None:

        def read(x: Tensor) -> None:
            seen["h"] = x.detach().clone()

        if cfg.probe.hook == "resid_pre":
            regs.append(pre_hook(hf, cfg.probe.layer, read))  # after the steers: it sees them
        else:
            regs.append(post_hook(decoder_layers(hf)[cfg.probe.layer], read))
    with hooked(regs):
        logits: Tensor = hf(torch.tensor([list(ids)]), use_cache=False).logits[0, -1].float()
    scores = None if cfg.probe is None else cfg.probe.scores(seen["h"][0])
    return logits, scores


def draw(logits: Tensor, banned: Sequence[int], gen: torch.Generator, cfg: Config) -> int:
    x = logits.float().clone()
    if banned:
        x[list(banned)] = -math.inf
    if cfg.greedy:
        return int(torch.argmax(x))
    probs = torch.softmax(x / cfg.temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


# ---------------------------------------------------------------------------------------------
# Generation with the rollback rules, one full forward per token fed
def simulate(hf: Any, prompt: Sequence[int], max_new: int, cfg: Config, seed: int = 0) -> RefGen:
    gen = torch.Generator().manual_seed(seed)
    n_prompt = len(prompt)
    seq, corr = list(prompt), [0.0] * n_prompt
    out = RefGen()
    logits, sc = full_forward(hf, seq, n_prompt, cfg, corr)
    if sc is not None:
        out.prompt_scores = sc.tolist()
    out.forward_tokens, max_fed = n_prompt, n_prompt - 1
    forbid: dict[int, set[int]] = {}
    safe_keep, refeed, correct_left = 0, False, 0
    while True:
        if refeed:
            refeed = False
        else:
            q = len(seq) - 1
            tok = draw(logits, sorted(forbid.get(q, set())), gen, cfg)
            if cfg.stop_at_eos and tok == cfg.eos:
                out.finish = "eos"
                return out
            if cfg.threshold is not None and (
                q == n_prompt - 1 or out.scores[q - n_prompt] < cfg.safe_threshold
            ):
                safe_keep = len(out.tokens)  # keep everything up to position q
            out.tokens.append(tok)
            seq.append(tok)
            corr.append(0.0)
            if len(out.tokens) >= max_new and cfg.probe is None:
                out.finish = "length"
                return out
        p = len(seq) - 1  # feed the token at p
        corr[p] = cfg.steer_scale if correct_left > 0 else 0.0
        correct_left = max(correct_left - 1, 0)
        out.forward_tokens += 1
        out.recomputed += int(p <= max_fed)
        max_fed = max(max_fed, p)
        logits, sc = full_forward(hf, seq, n_prompt, cfg, corr)
        gi = p - n_prompt
        fresh = gi >= len(out.scores)  # False for a corrective re-feed: that token keeps its first score
        if sc is not None and fresh:
            s = float(sc[p])
            out.scores.append(s)
            if cfg.threshold is not None and s >= cfg.threshold:
                stop = len(out.rollbacks) >= cfg.budget
                if not stop or cfg.on_budget == "stop":
                    keep = safe_keep
                    safe_pos = n_prompt + keep - 1
                    forbid = {k: v for k, v in forbid.items() if k <= safe_pos}
                    first = out.tokens[keep]
                    if cfg.forbid_token:
                        forbid.setdefault(safe_pos, set()).add(first)
                    out.rollbacks.append((gi, keep, gi + 1 - keep, first if cfg.forbid_token else None))
                    del out.tokens[keep:], out.scores[keep:], seq[n_prompt + keep :], corr[n_prompt + keep :]
                    if stop:
                        out.finish = "budget"
                        return out
                    if cfg.steer_scale > 0:
                        refeed, correct_left = True, cfg.steer_tokens
                    else:  # the safe point's logits, recomputed from scratch (not a counted forward)
                        logits, _ = full_forward(hf, seq, n_prompt, cfg, corr)
                    continue
        if len(out.tokens) >= max_new:
            out.finish = "length"
            return out


def replay_greedy(
    hf: Any, prompt: Sequence[int], tokens: Sequence[int], forbidden: dict[int, set[int]], cfg: Config
) -> list[int]:
    """Greedy tokens re-derived one by one from full-recompute logits of the kept prefix
    (``tokens[:k]``), with ``forbidden[position]`` masked; the returned list has ``len(tokens)``
    entries, each drawn from the *given* prefix (so one mismatch does not cascade)."""
    out = []
    for k in range(len(tokens)):
        seq = [*prompt, *tokens[:k]]
        logits, _ = full_forward(hf, seq, len(prompt), cfg)
        out.append(draw(logits, sorted(forbidden.get(len(seq) - 1, set())), torch.Generator(), cfg))
    return out


@torch.no_grad()
def hidden_states(hf: Any, ids: Sequence[int], layer: int, hook: str) -> Tensor:
    """The residual at ``resid_pre`` / ``resid_post`` of ``layer`` at every position (one full forward)."""
    seen: dict[str, Tensor] = {}

    def read(x: Tensor) -> None:
        seen["h"] = x.detach().clone()

    reg = pre_hook(hf, layer, read) if hook == "resid_pre" else post_hook(decoder_layers(hf)[layer], read)
    with hooked([reg]):
        hf(torch.tensor([list(ids)]), use_cache=False)
    return seen["h"][0]
