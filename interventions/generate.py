"""Generation with a KV cache, residual steering, a per-token toxicity monitor and rollback.

:func:`generate` runs the model's own decoder (the bridge's blocks, so every TransformerLens hook and
every active :mod:`interventions.edits` edit applies) one token per step with a Hugging Face
``DynamicCache``.

* **Monitor.** With ``monitor=probe`` the probe reads ``blocks.{L}.hook_{resid_post|resid_pre}`` in the
  same forward pass that feeds each token (and produces the next token's logits): no extra pass.
  ``scores[i]`` is the probe's probability for generated token ``i`` in its context.
* **Rollback.** With ``threshold=τ`` a score ``≥ τ`` rolls the sequence back to its latest *safe point*:
  the latest earlier position whose score was ``< policy.safe_threshold`` and whose next token starts a
  word (so the kept text ends at a word boundary); the end of the prompt is always a safe point. The
  tokens after it are discarded, the KV cache is truncated there, and generation resumes from it:

  - without corrective steering the next-token logits stored at the safe point are reused, so a
    rollback that discards ``n`` tokens costs exactly the ``n`` positions generated again;
  - with corrective steering (``policy.steer_scale > 0``) the safe-point token is fed again with
    ``−steer_scale × probe.direction`` added at ``blocks.{steer_layer}.hook_resid_pre`` (default: the
    block after the probe's, so the monitor still sees the unsteered residual), and so are the
    next ``policy.steer_tokens − 1`` tokens: ``n + 1`` positions;
  - with ``policy.forbid_token`` the token that started the discarded span cannot be drawn again at
    that position.

  Each sequence has ``policy.budget`` rollbacks. When a score reaches τ with the budget spent,
  ``policy.on_budget`` decides: ``"stop"`` truncates at the safe point and ends the sequence;
  ``"continue"`` keeps the token and goes on unmonitored-for-rollback (scores are still recorded).
* **Batches.** Prompts are left-padded; every sequence has its own position ids, attention mask and
  ``torch.Generator`` (seed ``seed + i`` for prompt ``i``), and rolls back on its own: in a batch,
  discarded cache slots are masked out (truncation for that row); when the trailing slots of every row
  are discarded the cache is physically cropped (always so with one sequence). A sequence that finishes
  (EOS, length, budget stop) leaves the batch: its row of the mask and of every layer's cached keys and
  values is dropped, so later steps run on the unfinished sequences only. Output does not depend on
  ``batch_size``.
* **Code.** The decoding loop itself lives in :mod:`interventions.decoding`, the batch state in
  :mod:`interventions.batch_state`.
* **Cost.** ``forward_tokens`` counts every position run through the model for a sequence (prompt
  included, all passes); ``recomputed`` counts the positions run again because of rollbacks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from interventions.batch_state import Row
from interventions.decoding import Engine, to_generation
from interventions.policy import Generation, RollbackPolicy
from interventions.sampling import Sampling, make_generator
from interventions.steering import Steer
from lens.errors import ToxlensError
from lens.model import LensModel
from lens.probe import HOOKS, Probe

__all__ = ["Generation", "RollbackPolicy", "Sampling", "Steer", "generate"]


@torch.no_grad()
def generate(
    model: LensModel,
    prompts: Sequence[str],
    max_new_tokens: int = 32,
    *,
    seed: int = 0,
    sampling: Sampling | None = None,
    steer: Steer | Sequence[Steer] = (),
    monitor: Probe | None = None,
    threshold: float | None = None,
    policy: RollbackPolicy | None = None,
    batch_size: int = 16,
    prepend_bos: bool = False,
    stop_at_eos: bool = True,
) -> list[Generation]:
    """Generate ``max_new_tokens`` for every prompt (see the module docstring for every option)."""
    sampling = sampling or Sampling()
    steers = [steer] if isinstance(steer, Steer) else list(steer)
    policy = policy or RollbackPolicy()
    if isinstance(prompts, str) or not prompts:
        raise ToxlensError("prompts must be a non-empty list of strings")
    if max_new_tokens < 1 or batch_size < 1:
        raise ToxlensError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    for s in steers:
        s.check(model)
    if threshold is not None and monitor is None:
        raise ToxlensError("threshold given without a monitor probe; pass monitor=Probe")
    if monitor is not None:
        _check_monitor(model, monitor, need_direction=threshold is not None and policy.steer_scale > 0)
    if threshold is not None:
        assert monitor is not None
        if not 0 < threshold <= 1:
            raise ToxlensError(f"threshold must be in (0, 1], got {threshold}")
        policy.check(model, monitor, threshold)
    ids = [model.tokenize(p, prepend_bos) for p in prompts]
    for i, row in enumerate(ids):
        if not row:
            raise ToxlensError(f"prompt {i} ({prompts[i]!r}) has no tokens")
        if len(row) + max_new_tokens > model.info.n_ctx:
            raise ToxlensError(
                f"prompt {i}: {len(row)} tokens + max_new_tokens={max_new_tokens} exceeds the context "
                f"of {model.info.n_ctx}"
            )
    engine = Engine(model, sampling, steers, monitor, threshold, policy, max_new_tokens, stop_at_eos)
    out: list[Generation] = []
    for start in range(0, len(ids), batch_size):
        chunk = list(range(start, min(start + batch_size, len(ids))))
        rows = [Row(ids[i], make_generator(seed + i, model.device)) for i in chunk]
        engine.run(rows)
        out.extend(to_generation(model, prompts[i], r, seed + i) for i, r in zip(chunk, rows))
    return out


def _check_monitor(model: LensModel, probe: Probe, need_direction: bool) -> None:
    """The probe must read an existing hook of this model and hold finite numbers."""
    if probe.hook not in HOOKS or not 0 <= probe.layer < model.n_layers:
        raise ToxlensError(
            f"monitor probe reads {probe.hook!r} at layer {probe.layer}; expected one of {sorted(HOOKS)} "
            f"at a layer in [0, {model.n_layers})"
        )
    d = model.info.d_model
    for name in ("weight", "mean", "std"):
        t = getattr(probe, name)
        if t.ndim != 1 or t.shape[0] != d:
            raise ToxlensError(f"monitor probe {name} has shape {tuple(t.shape)}, expected ({d},) (d_model)")
        if not torch.isfinite(t).all():
            raise ToxlensError(f"monitor probe {name} contains NaN or inf")
    if not math.isfinite(probe.bias) or bool((probe.std <= 0).any()):
        raise ToxlensError("monitor probe needs a finite bias and std > 0 everywhere")
    if need_direction and not bool(torch.isfinite(probe.direction).all()):
        raise ToxlensError("corrective steering needs a probe direction, but the probe's weight is zero")
