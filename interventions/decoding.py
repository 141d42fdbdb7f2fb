"""The decoding loop behind :func:`interventions.generate.generate`: one token per step with a Hugging Face
``DynamicCache``, steering and monitor hooks, and per-row rollback (the rules are in that module's docstring).

:class:`Engine` runs one batch of :class:`~interventions.batch_state.Row` s (the batch tensors, and rows
leaving the batch when they finish, are in :mod:`interventions.batch_state`); :func:`to_generation` turns
a finished row into a :class:`~interventions.policy.Generation`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

from interventions.batch_state import Batch, Row
from interventions.policy import Generation, RollbackEvent, RollbackPolicy
from interventions.sampling import Sampling, word_starts
from interventions.steering import Steer
from lens.errors import ToxlensError
from lens.hooks import attach, resid_pre_name
from lens.kv_cache import cache_kwarg, shimmed
from lens.model import LensModel
from lens.probe import HOOKS, Probe


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
        # one reduction instead of an elementwise test per step: a NaN/inf anywhere makes the sum non-finite
        # (so can an overflow of finite logits, hence the exact test before raising)
        if not bool(torch.isfinite(logits.sum())):
            bad = ~torch.isfinite(logits).all(dim=-1) & mask[:, -1].bool()
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
        batch = Batch(rows, self.pad, dev)
        b, width = batch.size, batch.width
        self.is_prompt = torch.ones(b, width, dtype=torch.bool, device=dev)
        self.correct = torch.zeros(b, width, device=dev)
        logits = self._forward(batch.prompt_ids.to(dev), batch.mask, batch.prompt_pos.to(dev), cache)
        scores = self._scores()
        for i, r in enumerate(rows):
            if scores is not None:
                r.prompt_scores = scores[i, width - len(r.prompt) :].tolist()
            r.safe_keep, r.safe_logits = 0, logits[i].clone() if self.threshold is not None else None
        nxt = logits
        while True:
            feed: dict[int, tuple[int, int]] = {}  # batch row -> (token, logical position)
            want: list[int] = []  # batch rows that draw a token this step
            for i, r in enumerate(batch.rows):
                if r.done:
                    continue
                if r.refeed:
                    r.refeed = False
                    feed[i] = (r.tokens[-1] if r.tokens else r.prompt[-1], r.length - 1)
                    continue
                want.append(i)
            drawn = self.sampling.sample_rows(
                nxt,
                [batch.rows[i].gen for i in want],
                want,
                [batch.rows[i].forbid.get(batch.rows[i].length - 1, ()) for i in want],
            )
            for i, tok in zip(want, drawn):
                r = batch.rows[i]
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
                    feed[i] = (tok, r.length - 1)
            if not feed:
                return
            # every live row feeds a token: after dropping the finished ones, batch row k feeds step[k]
            step = [feed[i] for i in batch.drop_finished(cache)]
            nxt = self._step(batch, step, cache)

    def _step(self, batch: Batch, step: list[tuple[int, int]], cache: Any) -> Tensor:
        """Feed ``step[k] = (token, position)`` for every batch row ``k``; returns the next logits."""
        dev, b, slot = batch.device, batch.size, batch.width
        self.is_prompt = torch.tensor(
            [[p < len(r.prompt)] for r, (_, p) in zip(batch.rows, step)], dtype=torch.bool, device=dev
        )
        correct = [0.0] * b
        for k, (r, (_, p)) in enumerate(zip(batch.rows, step)):
            if r.correct_left > 0:
                correct[k] = self.policy.steer_scale
                r.correct_left -= 1
            assert p == len(r.slots), (p, len(r.slots))
            r.slots.append(slot)
            if p <= r.max_fed:  # this position was run before a rollback discarded it
                r.recomputed += 1
            r.max_fed = max(r.max_fed, p)
            r.forward_tokens += 1
        self.correct = torch.tensor(correct, device=dev)[:, None]
        batch.extend()
        ids = torch.tensor([[t] for t, _ in step], dtype=torch.long, device=dev)
        pos = torch.tensor([[p] for _, p in step], dtype=torch.long, device=dev)
        nxt = self._forward(ids, batch.mask, pos, cache)
        scores = self._scores()
        fed_scores: list[float | None] = [None] * b if scores is None else scores[:, 0].tolist()
        for k, (tok, p) in enumerate(step):
            self._after_feed(batch, k, tok, p, fed_scores[k], nxt)
        batch.crop(cache)
        return nxt

    def _is_safe(self, r: Row, p: int, next_token: int) -> bool:
        """Is position ``p`` (whose next token was just drawn) a safe point?"""
        assert self.word_start is not None
        if p < len(r.prompt) - 1:
            return False
        if p == len(r.prompt) - 1:
            return True
        score = r.scores[p - len(r.prompt)]
        return score < self.policy.safe_threshold and bool(self.word_start[next_token])

    def _after_feed(self, batch: Batch, i: int, tok: int, p: int, score: float | None, nxt: Tensor) -> None:
        r = batch.rows[i]
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
                self._rollback(batch, i, gi, nxt)
                return
            if self.policy.on_budget == "stop":
                self._rollback(batch, i, gi, nxt)
                r.done = "budget"
                return
        if len(r.tokens) >= self.max_new:
            r.done = "length"

    def _rollback(self, batch: Batch, i: int, gi: int, nxt: Tensor) -> None:
        r = batch.rows[i]
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
        batch.mask_out(i, r.slots[cut:])
        del r.slots[cut:]
        if corrective:
            r.refeed, r.correct_left = True, self.policy.steer_tokens
        else:
            nxt[i] = r.safe_logits
