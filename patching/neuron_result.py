"""`NeuronRanking`: the labelled result of localisation from text (:func:`patching.neurons.rank_from_texts`).

Neurons are ranked by AUROC, ties broken by ``effect_size`` (the difference of the class means of the
pooled activation over their pooled standard deviation). Axes: neurons are ``[layer, neuron]`` (names ``L{l}.mlp.n{i}``), heads ``[layer, head]`` (``L{l}H{h}``),
MLPs ``[layer]`` (``L{l}.mlp``). ``to_dataframe()`` / ``top_k()`` give the neuron table (the columns of
``neurons.csv``), ``components_dataframe()`` the head/MLP table (``components.csv``). Saved as
``ranking.safetensors`` + ``ranking.json`` (labels, metadata); never pickle.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor

from lens.errors import ToxlensError
from lens.io import atomic_file

FORMAT_VERSION = 1
KIND = "neuron-ranking"
NEURON_COLUMNS = [
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
COMPONENT_COLUMNS = ["component", "kind", "layer", "head", "auroc", "attribution", "rank"]
_TENSORS = (
    "neuron_auroc",
    "neuron_effect",
    "cos_probe",
    "toxic_logit_mass",
    "top_token_ids",
    "head_auroc",
    "mlp_auroc",
)
_OPTIONAL = ("neuron_attr", "head_attr", "mlp_attr", "toxic_subspace")


@dataclass
class NeuronRanking:
    neuron_auroc: Float[Tensor, "layer d_mlp"]
    neuron_effect: Float[Tensor, "layer d_mlp"]
    cos_probe: Float[Tensor, "layer d_mlp"]
    toxic_logit_mass: Float[Tensor, "layer d_mlp"]
    top_token_ids: Int[Tensor, "layer d_mlp k"]
    head_auroc: Float[Tensor, "layer head_index"]
    mlp_auroc: Float[Tensor, "layer"]
    neuron_attr: Float[Tensor, "layer d_mlp"] | None
    head_attr: Float[Tensor, "layer head_index"] | None
    mlp_attr: Float[Tensor, "layer"] | None
    probe_direction: Float[Tensor, "d_model"]
    toxic_subspace: Float[Tensor, "layer k d_model"] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    token_texts: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return int(self.neuron_auroc.shape[0])

    @property
    def d_mlp(self) -> int:
        return int(self.neuron_auroc.shape[1])

    def _token_text(self) -> dict[int, str]:
        return dict(zip(self.token_ids, self.token_texts))

    def to_dataframe(self) -> pd.DataFrame:
        """One row per neuron (``neurons.csv``), ranked by AUROC (rank 1 = most toxic-selective)."""
        nl, dm = self.neuron_auroc.shape
        layer = torch.arange(nl).repeat_interleave(dm)
        neuron = torch.arange(dm).repeat(nl)
        text = self._token_text()
        top = self.top_token_ids.reshape(nl * dm, -1).tolist()
        df = pd.DataFrame(
            {
                "component": [f"L{la}.mlp.n{n}" for la, n in zip(layer.tolist(), neuron.tolist())],
                "layer": layer.numpy(),
                "neuron": neuron.numpy(),
                "auroc": self.neuron_auroc.flatten().numpy(),
                "effect_size": self.neuron_effect.flatten().numpy(),
                "cos_probe": self.cos_probe.flatten().numpy(),
                "toxic_logit_mass": self.toxic_logit_mass.flatten().numpy(),
                "attribution": (
                    self.neuron_attr.flatten().numpy() if self.neuron_attr is not None else math.nan
                ),
                "top_tokens": ["|".join(text.get(i, str(i)) for i in row) for row in top],
            }
        )
        df = df.sort_values(["auroc", "effect_size"], ascending=False, kind="stable").reset_index(drop=True)
        df["rank"] = np.arange(1, len(df) + 1)
        return df[NEURON_COLUMNS]

    def top_k(self, k: int = 10) -> pd.DataFrame:
        if k < 1:
            raise ToxlensError(f"k must be >= 1, got {k}")
        return self.to_dataframe().head(k)

    def components_dataframe(self) -> pd.DataFrame:
        """One row per head and MLP (``components.csv``), ranked by AUROC of the probe projection."""
        nl, nh = self.head_auroc.shape
        rows: list[tuple[Any, ...]] = []
        for la in range(nl):
            for h in range(nh):
                attr = float(self.head_attr[la, h]) if self.head_attr is not None else math.nan
                rows.append((f"L{la}H{h}", "head", la, h, float(self.head_auroc[la, h]), attr))
            attr = float(self.mlp_attr[la]) if self.mlp_attr is not None else math.nan
            rows.append((f"L{la}.mlp", "mlp", la, None, float(self.mlp_auroc[la]), attr))
        df = pd.DataFrame(rows, columns=COMPONENT_COLUMNS[:-1])
        df["head"] = df["head"].astype("Int64")
        df["rank"] = df["auroc"].rank(ascending=False, method="first").astype(int)
        return df.sort_values("rank").reset_index(drop=True)[COMPONENT_COLUMNS]

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: getattr(self, k) for k in _TENSORS}
        tensors |= {k: getattr(self, k) for k in _OPTIONAL if getattr(self, k) is not None}
        tensors["probe_direction"] = self.probe_direction
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        atomic_file(out / "ranking.safetensors", lambda p: save_file(tensors, p))
        header = {
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            "token_ids": self.token_ids,
            "token_texts": self.token_texts,
            "metadata": self.metadata,
        }
        text = json.dumps(header, indent=2, default=str, allow_nan=False)
        atomic_file(out / "ranking.json", lambda p: Path(p).write_text(text))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> NeuronRanking:
        d = Path(directory)
        js, st = d / "ranking.json", d / "ranking.safetensors"
        if not js.is_file() or not st.is_file():
            raise ToxlensError(
                f"{str(d)!r} holds no neuron ranking: expected ranking.json and ranking.safetensors "
                "(written by `toxlens locate --texts`)"
            )
        try:
            header = json.loads(js.read_text(encoding="utf-8"))
            t = load_file(str(st))
        except (ValueError, OSError, UnicodeDecodeError) as err:
            raise ToxlensError(f"{d}: unreadable neuron ranking ({err})") from err
        if header.get("kind") != KIND or header.get("format_version") != FORMAT_VERSION:
            raise ToxlensError(
                f"{js}: expected kind {KIND!r} format {FORMAT_VERSION}, got "
                f"{header.get('kind')!r} format {header.get('format_version')!r}"
            )
        missing = [k for k in (*_TENSORS, "probe_direction") if k not in t]
        if missing:
            raise ToxlensError(f"{st}: missing tensors {missing}")
        return cls(
            t["neuron_auroc"],
            t["neuron_effect"],
            t["cos_probe"],
            t["toxic_logit_mass"],
            t["top_token_ids"],
            t["head_auroc"],
            t["mlp_auroc"],
            t.get("neuron_attr"),
            t.get("head_attr"),
            t.get("mlp_attr"),
            probe_direction=t["probe_direction"],
            toxic_subspace=t.get("toxic_subspace"),
            metadata=header.get("metadata", {}),
            token_texts=list(header.get("token_texts", [])),
            token_ids=[int(i) for i in header.get("token_ids", [])],
        )
