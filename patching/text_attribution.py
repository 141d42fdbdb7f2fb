"""Gradient attribution of every neuron, head and MLP over *every* position of real toxic texts.

For a toxic text with activations ``a_u[p]`` of unit ``u`` at position ``p`` and a target
``T = Σ_p t(resid_final[p])`` summed over all positions (what the model does while it reads and writes
toxic text, not only at one final position), the first-order effect of replacing the unit's activation
by its non-toxic baseline ``ā_u`` (the mean over every token of the non-toxic texts) is

    attr_u(text) = Σ_p ∂T/∂a_u[p] · (a_u[p] − ā_u)

(one forward and one backward per batch). The score is the mean over the toxic texts; positive means
the unit, at its toxic-text value, pushes the target up. Units: neurons (``blocks.l.mlp.out.hook_in``,
one value per neuron), heads (``hook_z``, summed over ``d_head``), MLPs (``hook_mlp_out``).

Targets (:data:`TARGETS`):

* ``probe`` — the logit of a linear probe of the last block's residual stream (built from the data's
  human labels; independent of any scorer);
* ``toxic-mass`` — ``log Σ_{t∈T} softmax(logits[p])_t``, the next-token log mass on the toxic token set
  (that set comes from alt-profanity-check's vocabulary, the default *scorer*: a scorer-derived
  variant, reported beside the label-derived one, never used for the ranking by default).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens.errors import ToxlensError
from lens.hooks import attach, keepers, mlp_out_name, z_name
from lens.model import LensModel
from lens.probe import Probe, tokenize_texts
from lens.probe_features import length_groups
from lens.weights import neuron_act_name

TARGETS = ("probe", "toxic-mass")


@dataclass
class Attribution:
    neurons: Float[Tensor, "layer d_mlp"]
    heads: Float[Tensor, "layer head_index"]
    mlps: Float[Tensor, "layer"]
    target: str
    n_texts: int


def attribution_scores(
    model: LensModel,
    texts: Sequence[str],
    baseline_neurons: Float[Tensor, "layer d_mlp"],
    baseline_z: Float[Tensor, "layer head_index d_head"],
    baseline_mlp: Float[Tensor, "layer d_model"],
    target: str,
    probe: Probe | None = None,
    toxic_ids: Int[Tensor, "n_tokens"] | None = None,
    batch_size: int = 16,
    prepend_bos: bool = False,
    max_tokens: int = 64,
) -> Attribution:
    """Mean attribution over ``texts`` of every unit (see the module docstring)."""
    if target not in TARGETS:
        raise ToxlensError(f"unknown attribution target {target!r}; expected one of {TARGETS}")
    if target == "probe" and probe is None:
        raise ToxlensError("attribution target 'probe' needs a probe")
    if target == "toxic-mass" and (toxic_ids is None or len(toxic_ids) == 0):
        raise ToxlensError("attribution target 'toxic-mass' needs a non-empty toxic token set")
    if not texts:
        raise ToxlensError("attribution needs at least one toxic text, got none")
    nl = model.n_layers
    ids = tokenize_texts(model, texts, prepend_bos, max_tokens)
    fn = _target_fn(model, target, probe, toxic_ids)
    sums = Attribution(
        torch.zeros_like(baseline_neurons),
        torch.zeros(baseline_z.shape[:2]),
        torch.zeros(nl),
        target,
        len(texts),
    )
    names = [neuron_act_name(la) for la in range(nl)] + [z_name(la) for la in range(nl)]
    names += [mlp_out_name(la) for la in range(nl)]
    dev = model.device
    for rows in length_groups(ids, batch_size):
        acts: dict[str, Tensor] = {}
        prepared = model.prepare(torch.tensor([ids[i] for i in rows], device=dev))
        with torch.enable_grad(), attach(model.bridge, keepers(acts, names, keep_graph=True)):
            final = model.run_layers(prepared.resid, prepared)
            grads = torch.autograd.grad(fn(final), [acts[n] for n in names])
        g = dict(zip(names, grads))
        with torch.no_grad():
            for la in range(nl):
                an, zn, mn = neuron_act_name(la), z_name(la), mlp_out_name(la)
                sums.neurons[la] += _attr(g[an], acts[an], baseline_neurons[la], (0, 1))
                sums.heads[la] += _attr(g[zn], acts[zn], baseline_z[la], (0, 1, 3))
                sums.mlps[la] += _attr(g[mn], acts[mn], baseline_mlp[la], (0, 1, 2))
    for t in (sums.neurons, sums.heads, sums.mlps):
        t /= len(texts)
    return sums


def _attr(grad: Tensor, act: Tensor, base: Tensor, dims: tuple[int, ...]) -> Tensor:
    return (grad.float() * (act.detach().float() - base.to(act.device))).sum(dims).cpu()


def _target_fn(
    model: LensModel, target: str, probe: Probe | None, toxic_ids: Tensor | None
) -> Callable[[Tensor], Tensor]:
    if target == "probe":
        assert probe is not None
        return lambda final: probe.logit(final).sum()
    assert toxic_ids is not None
    ids = toxic_ids.to(model.device)

    def mass(final: Tensor) -> Tensor:
        logp = torch.log_softmax(model.logits_at(final, slice(None)).float(), -1)
        return torch.logsumexp(logp[..., ids], -1).sum()

    return mass
