"""The decoding loop behind :func:`interventions.generate.generate`: one token per step with a Hugging Face
``DynamicCache``, steering and monitor hooks, and per-row rollback (the rules are in that module's docstring).

:class:`Engine` runs one batch of :class:`Row` s; :func:`to_generation` turns a finished row into a
:class:`~interventions.policy.Generation`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from interventions.policy import Generation, RollbackEvent, RollbackPolicy
from interventions.sampling import Sampling, word_starts
from interventions.steering import Steer
from lens.errors import ToxlensError
from lens.hooks import attach, resid_pre_name
from lens.kv_cache import cache_kwarg, shimmed
from lens.model import LensModel
from lens.probe import HOOKS, Probe


@dataclass
class Row:
    prompt: list[int]
    gen: torch.Generator
    tokens: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    prompt_scores: list[float] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)  # physical cache slot of each logical position
    rollbacks: list[RollbackEvent] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    forbid: dict[int, set[int]] = field(default_factory=dict)
    safe_keep: int = 0  # generated tokens kept at the latest safe point
    safe_logits: Tensor | None = None
    refeed: bool = False  # feed the last kept token again (corrective steering) instead of sampling
    correct_left: int = 0
    forward_tokens: int = 0
    recomputed: int = 0
    max_fed: int = -1
    done: str = ""

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.tokens)


def to_generation(model: LensModel, prompt: str, r: Row, seed: int) -> Generation:
    text = model.tokenizer.decode(r.tokens, skip_special_tokens=True)
    return Generation(
        prompt=prompt,
        prompt_tokens=r.prompt,
        tokens=r.tokens,
        text=text,
        scores=r.scores,
        prompt_scores=r.prompt_scores,
        rollbacks=r.rollbacks,
        forward_tokens=r.forward_tokens,
        recomputed=r.recomputed,
        finish_reason=r.done,
        seed=seed,
        timeline=r.timeline,
    )


class Engine:
    def __init__(
        self,
        model: LensModel,
        sampling: Sampling,
        steers: list[Steer],
        monitor: Probe | None,
        threshold: float | None,
        policy: RollbackPolicy,
        max_new: int,
        stop_at_eos: bool,
    ) -> None:
        self.model, self.sampling, self.steers = model, sampling, steers
        self.monitor, self.threshold, self.policy = monitor, threshold, policy
        self.max_new, self.stop_at_eos = max_new, stop_at_eos
        self.hf = model.bridge.original_model
        self.cache_kw = cache_kwarg(self.hf)
        self.eos = model.tokenizer.eos_token_id
        self.pad = self.eos if self.eos is not None else 0
        self.word_start = word_starts(model.tokenizer) if threshold is not None else None
        # per-forward context read by the hooks
        self.is_prompt = torch.zeros(0, 0, dtype=torch.bool)
        self.correct = torch.zeros(0, 0)
        self.resid: Tensor | None = None

    # -- hooks -------------------------------------------------------------------------------
    def _hooks(self) -> list[tuple[str, Any]]:
        dev = self.model.device
        hooks: list[tuple[str, Any]] = []
        for s in self.steers:
            v = (s.scale * s.vector.float()).to(dev)

            def add(x: Tensor, v: Tensor = v, where: str = s.positions) -> Tensor:
                if where == "all":
                    return x + v.to(x.dtype)
                mask = self.is_prompt if where == "prompt" else ~self.is_prompt
                return x + mask[..., None].to(x.dtype) * v.to(x.dtype)

            hooks.append((s.hook_name, add))
        if self.monitor is not None:
            if self.threshold is not None and self.policy.steer_scale > 0:
                d = self.monitor.direction.float().to(dev)

                def correct(x: Tensor, d: Tensor = d) -> Tensor:
                    return x - self.correct[..., None].to(x.dtype) * d.to(x.dtype)

                hooks.append(
                    (resid_pre_name(self.policy.layer_for(self.monitor, self.model.n_layers)), correct)
                )

            def read(x: Tensor) -> None:
                self.resid = x.detach()

            hooks.append((HOOKS[self.monitor.hook](self.monitor.layer), read))
        return hooks

    def _forward(self, ids: Tensor, mask: Tensor, pos: Tensor, cache: Any) -> Tensor:
        out = self.hf(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_kw: cache},
        )
        logits: Tensor = out.logits[:, -1].float()
        live = mask[:, -1].bool()
        bad = ~torch.isfinite(logits).all(dim=-1) & live
        if bool(bad.any()):
            raise ToxlensError(self._non_finite_message(bad.nonzero()[:, 0].tolist()))
        return logits

    def _non_finite_message(self, rows: list[int]) -> str:
        """Name the steering/correction scales: an overflow to NaN/inf logits is almost always one of them."""
        parts = [f"steer scale {s.scale:g} at layer {s.layer}" for s in self.steers]
        if self.monitor is not None and self.threshold is not None and self.policy.steer_scale > 0:
            parts.append(f"correction scale {self.policy.steer_scale:g}")
        cause = (
            f"; expected a smaller scale: {', '.join(parts)} overflows the residual stream"
            if parts
            else "; check the model weights and dtype"
        )
        return f"the model produced NaN/inf logits for batch rows {rows}{cause}"

    def _scores(self) -> Tensor | None:
        if self.monitor is None or self.resid is None:
            return None
        return self.monitor.score(self.resid).float().cpu()

    # -- the loop ----------------------------------------------------------------------------
    def run(self, rows: list[Row]) -> None:
        from transformers import DynamicCache

        dev = self.model.device
        with shimmed(self.model.blocks), attach(self.model.bridge, self._hooks()):
            self._loop(rows, DynamicCache(), dev)

    def _loop(self, rows: list[Row], cache: Any, dev: torch.device) -> None:
        b = len(rows)
        width = max(len(r.prompt) for r in rows)
        ids = torch.full((b, width), self.pad, dtype=torch.long)
        mask = torch.zeros(b, width, dtype=torch.long)
        pos = torch.zeros(b, width, dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r.prompt)
            ids[i, width - n :] = torch.tensor(r.prompt)
            mask[i, width - n :] = 1
            pos[i, width - n :] = torch.arange(n)
            r.slots = list(range(width - n, width))
            r.forward_tokens, r.max_fed = n, n - 1
        self.is_prompt = torch.ones(b, width, dtype=torch.bool, device=dev)
        self.correct = torch.zeros(b, width, device=dev)
        logits = self._forward(ids.to(dev), mask.to(dev), pos.to(dev), cache)
        scores = self._scores()
        for i, r in enumerate(rows):
            if scores is not None:
                r.prompt_scores = scores[i, width - len(r.prompt) :].tolist()
            r.safe_keep, r.safe_logits = 0, logits[i].clone() if self.threshold is not None else None
        nxt = logits
        while True:
            feed: list[tuple[int, int, int]] = []  # (row, token, logical position)
            want: list[int] = []  # rows that draw a token this step
            for i, r in enumerate(rows):
                if r.done:
                    continue
                if r.refeed:
                    r.refeed = False
                    last = r.tokens[-1] if r.tokens else r.prompt[-1]
                    feed.append((i, last, r.length - 1))
                    continue
                want.append(i)
            drawn = self.sampling.sample_rows(
                nxt,
                [rows[i].gen for i in want],
                want,
                [rows[i].forbid.get(rows[i].length - 1, ()) for i in want],
            )
            for i, tok in zip(want, drawn):
                r = rows[i]
                p = r.length - 1  # the position whose logits were sampled
                if self.stop_at_eos and tok == self.eos:
                    r.done = "eos"  # EOS ends the text and is not part of it
                    continue
                r.tokens.append(tok)
                if self.word_start is not None and self._is_safe(r, p, tok):
                    r.safe_keep, r.safe_logits = len(r.tokens) - 1, nxt[i].clone()
                if len(r.tokens) >= self.max_new and self.monitor is None:
                    r.done = "length"  # the last token need not be fed
                else:
                    feed.append((i, tok, r.length - 1))
            if not feed:
                return
            step_ids = torch.full((b, 1), self.pad, dtype=torch.long)
            step_pos = torch.zeros(b, 1, dtype=torch.long)
            col = torch.zeros(b, 1, dtype=torch.long)
            self.is_prompt = torch.zeros(b, 1, dtype=torch.bool, device=dev)
            self.correct = torch.zeros(b, 1, device=dev)
            slot = mask.shape[1]
            for i, tok, p in feed:
                r = rows[i]
                step_ids[i, 0], step_pos[i, 0], col[i, 0] = tok, p, 1
                self.is_prompt[i, 0] = p < len(r.prompt)
                if r.correct_left > 0:
                    self.correct[i, 0] = self.policy.steer_scale
                    r.correct_left -= 1
                assert p == len(r.slots), (p, len(r.slots))
                r.slots.append(slot)
                if p <= r.max_fed:  # this position was run before a rollback discarded it
                    r.recomputed += 1
                r.max_fed = max(r.max_fed, p)
                r.forward_tokens += 1
            mask = torch.cat([mask, col], dim=1)
            nxt = self._forward(step_ids.to(dev), mask.to(dev), step_pos.to(dev), cache)
            scores = self._scores()
            for i, tok, p in feed:
                self._after_feed(
                    rows[i], i, tok, p, None if scores is None else float(scores[i, 0]), mask, nxt
                )
            mask = self._crop(rows, mask, cache)

    def _is_safe(self, r: Row, p: int, next_token: int) -> bool:
        """Is position ``p`` (whose next token was just drawn) a safe point?"""
        assert self.word_start is not None
        if p < len(r.prompt) - 1:
            return False
        if p == len(r.prompt) - 1:
            return True
        score = r.scores[p - len(r.prompt)]
        return score < self.policy.safe_threshold and bool(self.word_start[next_token])

    def _after_feed(
        self, r: Row, i: int, tok: int, p: int, score: float | None, mask: Tensor, nxt: Tensor
    ) -> None:
        gi = p - len(r.prompt)  # generated index of the fed token (-1: the prompt's last token)
        fresh = gi >= len(r.scores)  # False for a token fed again with the corrective steer
        if score is not None and fresh:
            r.scores.append(score)  # a token fed again keeps its first score
        if score is not None:
            r.timeline.append({"position": p, "token": tok, "score": score, "event": "token"})
        if (
            self.threshold is not None
            and score is not None
            and gi >= 0
            and fresh
            and score >= self.threshold
            and not (r.done or r.refeed)
        ):
            if len(r.rollbacks) < self.policy.budget:
                self._rollback(r, i, gi, mask, nxt)
                return
            if self.policy.on_budget == "stop":
                self._rollback(r, i, gi, mask, nxt)
                r.done = "budget"
                return
        if len(r.tokens) >= self.max_new:
            r.done = "length"

    def _rollback(self, r: Row, i: int, gi: int, mask: Tensor, nxt: Tensor) -> None:
        keep = r.safe_keep
        assert r.safe_logits is not None
        first = r.tokens[keep]
        ev = RollbackEvent(at=gi, to=keep, discarded=gi + 1 - keep)
        safe_pos = len(r.prompt) + keep - 1
        r.forbid = {q: s for q, s in r.forbid.items() if q <= safe_pos}
        if self.policy.forbid_token:
            r.forbid.setdefault(safe_pos, set()).add(first)
            ev.forbidden = first
        r.rollbacks.append(ev)
        r.timeline.append(
            {"position": safe_pos, "token": None, "score": None, "event": "rollback", **asdict(ev)}
        )
        del r.tokens[keep:]
        del r.scores[keep:]
        corrective = self.policy.steer_scale > 0
        cut = safe_pos if corrective else safe_pos + 1
        for q in range(cut, len(r.slots)):
            mask[i, r.slots[q]] = 0
        del r.slots[cut:]
        if corrective:
            r.refeed, r.correct_left = True, self.policy.steer_tokens
        else:
            nxt[i] = r.safe_logits

    def _crop(self, rows: list[Row], mask: Tensor, cache: Any) -> Tensor:
        """Physically drop trailing cache slots that no row uses any more."""
        used = max((max(r.slots) for r in rows if r.slots), default=-1) + 1
        live_tail = int(mask[:, used:].sum()) if used < mask.shape[1] else 0
        if used < mask.shape[1] and live_tail == 0:
            cache.crop(used - mask.shape[1])  # negative: remove that many trailing slots
            return mask[:, :used]
        return mask
