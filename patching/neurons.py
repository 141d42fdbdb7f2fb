"""Localisation from labelled text: rank every MLP neuron (and head, and MLP) by how it separates toxic
from non-toxic text. Labels are the data's human labels only.

:func:`rank_from_texts` makes one streamed pass (:mod:`patching.text_stats`), fits a linear probe of
the last block's mean residual on the same labels (:func:`lens.probe.fit_probe`, seeded split,
held-out AUC recorded), and computes per neuron ``L{l}.mlp.n{i}``:

* ``auroc`` — ROC AUC of its pooled activation (``pooling``: ``max`` or ``mean`` over the text's
  tokens) for toxic vs non-toxic texts (> 0.5: higher on toxic text). The ranking (``rank``) is by
  ``auroc``, highest first;
* ``cos_probe`` — cosine of its value vector with the probe direction;
* ``toxic_logit_mass`` and ``top_tokens`` — logit lens of the value vector: ``logits = W_U·(γ ⊙ v)``
  (γ: the final norm's weight; LayerNorm models also centre ``v``), the softmax mass on the toxic token
  set and the ``n_top_tokens`` most promoted tokens (descriptive only; never used to rank);
* ``attribution`` (optional, ``n_attribution > 0``) — :mod:`patching.text_attribution` on the first
  ``n_attribution`` toxic texts against the non-toxic mean.

Heads and MLPs get ``auroc`` of their mean output projected on the probe direction, and ``attribution``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from lens.errors import ToxlensError
from lens.model import LensModel
from lens.probe import data_hash, fit_probe
from lens.weights import head_out_weights, mlp_weights
from patching.neuron_result import NeuronRanking
from patching.text_attribution import attribution_scores
from patching.text_stats import POOLINGS, Pooler, auroc_columns, collect_pooled, effect_size


def rank_from_texts(
    model: LensModel,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    pooling: str = "max",
    batch_size: int = 32,
    prepend_bos: bool = False,
    max_tokens: int = 64,
    n_attribution: int = 128,
    attribution_target: str = "probe",
    toxic_ids: Tensor | None = None,
    n_top_tokens: int = 8,
    probe_seed: int = 0,
    subspace_rank: int = 4,
    progress: Callable[[str], None] | None = None,
    pooler: Pooler | None = None,
) -> NeuronRanking:
    """Rank neurons, heads and MLPs from labelled texts (see the module docstring). ``pooler`` runs the
    pooling pass's batches elsewhere (:mod:`toxlens.locate_texts_sharded`); the result is the same."""
    if pooling not in POOLINGS:
        raise ToxlensError(f"unknown neuron pooling {pooling!r}; expected one of {POOLINGS}")
    if len(texts) != len(labels):
        raise ToxlensError(f"got {len(texts)} texts but {len(labels)} labels; expected one label per text")
    y = torch.tensor([int(v) for v in labels], dtype=torch.long)
    if set(y.tolist()) - {0, 1}:
        raise ToxlensError(f"labels must be 0 or 1, got {sorted(set(y.tolist()) - {0, 1})[:5]}")
    counts = [int((y == c).sum()) for c in (0, 1)]
    if min(counts) < 2:
        raise ToxlensError(
            f"labels need both classes (>= 2 texts each), got {counts[1]} toxic and {counts[0]} non-toxic"
        )
    if toxic_ids is not None:
        vocab = model.info.d_vocab
        if toxic_ids.ndim != 1 or (
            len(toxic_ids) and not 0 <= int(toxic_ids.min()) <= int(toxic_ids.max()) < vocab
        ):
            raise ToxlensError(
                f"toxic_ids must be a 1-D tensor of token ids in [0, {vocab}), got {toxic_ids.tolist()[:8]}"
            )
    say = progress or (lambda _m: None)
    say(f"pooling activations of {len(texts)} texts")
    stats = collect_pooled(
        model, texts, pooling, batch_size, prepend_bos, max_tokens, baseline=y == 0, pooler=pooler
    )
    probe = fit_probe(stats.resid, y, model.n_layers - 1, "resid_post", "mean", seed=probe_seed)
    probe.metadata.update(spec=model.spec, data_hash=data_hash(texts, labels), source="locate --texts")
    d = probe.direction
    say("AUROC of every unit")
    neuron_auroc = auroc_columns(stats.neurons, y)
    neuron_effect = effect_size(stats.neurons, y)
    u = _head_readout(model, d)  # [layer, head, d_head]
    head_proj = torch.einsum("nlhd,lhd->nlh", stats.z, u)
    head_auroc = auroc_columns(head_proj, y)
    mlp_auroc = auroc_columns(stats.mlp_out @ d, y)
    cos, mass, top = _value_vector_stats(model, d, toxic_ids, n_top_tokens)
    attribution = None
    if n_attribution > 0:
        say(f"attribution ({attribution_target}) over {min(n_attribution, counts[1])} toxic texts")
        tox = [i for i in range(len(texts)) if y[i] == 1][:n_attribution]
        neg = y == 0
        w = stats.n_tokens[neg].float()  # token-weighted mean over non-toxic texts
        base_z = (stats.z[neg] * w[:, None, None, None]).sum(0) / w.sum()
        base_mlp = (stats.mlp_out[neg] * w[:, None, None]).sum(0) / w.sum()
        base_n = stats.baseline_neurons
        attribution = attribution_scores(
            model,
            [texts[i] for i in tox],
            base_n,
            base_z,
            base_mlp,
            attribution_target,
            probe=probe,
            toxic_ids=toxic_ids,
            batch_size=max(1, batch_size // 2),
            prepend_bos=prepend_bos,
            max_tokens=max_tokens,
        )
    meta: dict[str, Any] = {
        "spec": model.spec,
        "model": model.info.to_dict(),
        "n_texts": len(texts),
        "n_toxic": counts[1],
        "n_nontoxic": counts[0],
        "data_hash": data_hash(texts, labels),
        "pooling": pooling,
        "max_tokens": max_tokens,
        "prepend_bos": prepend_bos,
        "activation": "input of the MLP output projection (blocks.{l}.mlp.out.hook_in)",
        "rank_by": "auroc (descending)",
        "component_stat": "mean over tokens of the component output, projected on the probe direction",
        "probe": {k: probe.metadata.get(k) for k in ("auc", "accuracy", "n_train", "n_test", "C", "seed")},
        "probe_site": f"blocks.{model.n_layers - 1}.hook_resid_post, mean over tokens",
        "logit_lens": "W_U·(γ ⊙ v), γ the final norm weight (LayerNorm: v centred first)",
        "toxic_token_set": "none" if toxic_ids is None else f"{len(toxic_ids)} ids",
        "attribution_target": attribution_target if attribution is not None else None,
        "n_attribution": attribution.n_texts if attribution is not None else 0,
        "labels": "the 0/1 labels given by the caller (toxlens locate --texts: the data file's label column); "
        "no scorer is used",
        "toxic_subspace": f"per layer, top {subspace_rank} right-singular vectors of (toxic text's mean MLP "
        "output − mean over non-toxic texts), each row's component along that mean removed first (ProFS centring)",
    }
    return NeuronRanking(
        neuron_auroc=neuron_auroc,
        neuron_effect=neuron_effect,
        cos_probe=cos,
        toxic_logit_mass=mass,
        top_token_ids=top,
        head_auroc=head_auroc,
        mlp_auroc=mlp_auroc,
        neuron_attr=None if attribution is None else attribution.neurons,
        head_attr=None if attribution is None else attribution.heads,
        mlp_attr=None if attribution is None else attribution.mlps,
        probe_direction=d,
        toxic_subspace=toxic_subspace(stats.mlp_out, y, subspace_rank),
        metadata=meta,
        token_texts=[model.tokenizer.decode([i]) for i in top.unique().tolist()],
        token_ids=top.unique().tolist(),
    )


def _head_readout(model: LensModel, d: Tensor) -> Tensor:
    """Per head, the vector ``u`` with ``z_h · u = (z_h W_O^h) · d`` (``[layer, head, d_head]``)."""
    with torch.no_grad():
        return torch.stack(
            [head_out_weights(model, la).detach().float().cpu() @ d for la in range(model.n_layers)]
        )


def _value_vector_stats(
    model: LensModel, d: Tensor, toxic_ids: Tensor | None, k: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per neuron: cosine of its value vector with ``d``, logit-lens toxic mass and top-``k`` token ids."""
    w_u = model.bridge.original_model.get_output_embeddings().weight.detach().float()  # [vocab, d_model]
    norm = model.bridge.ln_final.original_component
    gamma = getattr(norm, "weight", None)
    centre = type(norm).__name__ == "LayerNorm"
    cos, mass, top = [], [], []
    with torch.no_grad():
        for layer in range(model.n_layers):
            v = mlp_weights(model, layer).out.detach().float().cpu()
            cos.append(torch.nn.functional.cosine_similarity(v, d[None], dim=-1))
            x = v - v.mean(-1, keepdim=True) if centre else v
            if gamma is not None:
                x = x * gamma.detach().float().cpu()
            logits = x @ w_u.cpu().T
            top.append(logits.topk(k, -1).indices)
            if toxic_ids is not None and len(toxic_ids):
                mass.append(torch.softmax(logits, -1)[:, toxic_ids.cpu()].sum(-1))
            else:
                mass.append(torch.full((v.shape[0],), float("nan")))
    return torch.stack(cos), torch.stack(mass), torch.stack(top)


def toxic_subspace(mlp_out: Tensor, y: Tensor, k: int) -> Tensor:
    """Per layer, the top-``k`` right-singular vectors (orthonormal rows) of the matrix whose rows are
    each toxic text's mean MLP output minus the non-toxic texts' average, after removing from every row
    its component along that average (ProFS's centring step: the mean direction every text shares, which
    on smollm2-135m is the top singular direction in many layers, is not a toxic one) —
    ``[layer, k, d_model]``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ToxlensError(f"subspace_rank must be an int >= 1, got {k!r}")
    mean = mlp_out[y == 0].double().mean(0)  # [layer, d_model]
    diff = mlp_out[y == 1].double() - mean[None]  # [n_toxic, layer, d_model]
    out = []
    for la in range(mlp_out.shape[1]):
        rows, mu = diff[:, la], mean[la]
        if mu.norm() > 0:
            mu = mu / mu.norm()
            rows = rows - (rows @ mu)[:, None] * mu[None]
        _u, _s, vh = torch.linalg.svd(rows, full_matrices=False)
        out.append(vh[: min(k, vh.shape[0])].float())
    return torch.stack(out)
