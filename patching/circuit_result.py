"""`FaithfulnessResult`: sufficiency and necessity of a ranking's top-k sets and of random k-sets.

It stores only what cannot be derived — the metric per pair with each set patched (both ways) and the
clean metrics — plus the sets and metadata. Scores are ratios of means over pairs (as
:attr:`patching.result.PatchResult.mean`); per-pair scores normalise each pair by itself.
Saved as ``faithfulness.csv`` (the table) + ``result.json`` (everything, incl. per-pair and per-draw
values). No pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from lens.errors import ToxlensError
from lens.io import atomic_file, json_safe

FORMAT_VERSION = 1
DEFINITIONS = {
    "D": "mean_i m(toxic_i) - mean_i m(benign_i)",
    "sufficiency": "(mean_i m(benign_i with S from toxic_i) - mean_i m(benign_i)) / D",
    "necessity": "(mean_i m(toxic_i) - mean_i m(toxic_i with S from benign_i)) / D",
    "S": "the top-k components of the ranking (or a random k-set of the pool), patched together at "
    "every position; head (l,h): blocks.l.attn.hook_z[:, :, h]; MLP l: blocks.l.hook_mlp_out",
    "random": "n_random sets of size k drawn uniformly without replacement from the pool "
    "(torch.Generator seeded with seed, draws in order of k); mean and sd (ddof=0) over draws",
    "k80": "the smallest k whose sufficiency >= threshold (null if none)",
    "per_pair": "the same formulas with pair i's own m(toxic_i), m(benign_i)",
}
COLUMNS = [
    "k",
    "sufficiency",
    "necessity",
    "random_mean",
    "random_sd",
    "random_necessity_mean",
    "random_necessity_sd",
]


@dataclass
class FaithfulnessResult:
    ks: list[int]
    top_sets: list[list[str]]
    random_sets: list[list[list[str]]]  # [k][draw] -> names
    m_toxic: Float[Tensor, "pair"]
    m_benign: Float[Tensor, "pair"]
    suff_patched: Float[Tensor, "pair k"]  # m(benign_i with top-k from toxic_i)
    nec_patched: Float[Tensor, "pair k"]  # m(toxic_i with top-k from benign_i)
    random_suff_patched: Float[Tensor, "pair k draw"]
    random_nec_patched: Float[Tensor, "pair k draw"]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, n_k = self.m_toxic.shape[0], len(self.ks)
        n_draw = len(self.random_sets[0]) if self.random_sets else 0
        expected = {
            "m_benign": (self.m_benign, (n,)),
            "suff_patched": (self.suff_patched, (n, n_k)),
            "nec_patched": (self.nec_patched, (n, n_k)),
            "random_suff_patched": (self.random_suff_patched, (n, n_k, n_draw)),
            "random_nec_patched": (self.random_nec_patched, (n, n_k, n_draw)),
        }
        for name, (t, shape) in expected.items():
            if tuple(t.shape) != shape:
                raise ToxlensError(f"{name} has shape {tuple(t.shape)}, expected {shape}")
        self.metadata.setdefault("threshold", 0.8)

    # -- derived numbers -----------------------------------------------------------------------
    @property
    def denominator(self) -> float:
        return float(self.m_toxic.mean() - self.m_benign.mean())

    @property
    def sufficiency(self) -> Float[Tensor, "k"]:
        return (self.suff_patched.mean(0) - self.m_benign.mean()) / self.denominator

    @property
    def necessity(self) -> Float[Tensor, "k"]:
        return (self.m_toxic.mean() - self.nec_patched.mean(0)) / self.denominator

    @property
    def random_sufficiency(self) -> Float[Tensor, "k draw"]:
        return (self.random_suff_patched.mean(0) - self.m_benign.mean()) / self.denominator

    @property
    def random_necessity(self) -> Float[Tensor, "k draw"]:
        return (self.m_toxic.mean() - self.random_nec_patched.mean(0)) / self.denominator

    @property
    def per_pair_sufficiency(self) -> Float[Tensor, "pair k"]:
        return (self.suff_patched - self.m_benign[:, None]) / (self.m_toxic - self.m_benign)[:, None]

    @property
    def per_pair_necessity(self) -> Float[Tensor, "pair k"]:
        return (self.m_toxic[:, None] - self.nec_patched) / (self.m_toxic - self.m_benign)[:, None]

    def k_at(self, values: Tensor) -> int | None:
        """The smallest k whose value is >= the threshold (``None`` if none)."""
        hits = [k for k, v in zip(self.ks, values.tolist()) if v >= float(self.metadata["threshold"])]
        return hits[0] if hits else None

    @property
    def k80(self) -> int | None:
        return self.k_at(self.sufficiency)

    @property
    def random_k80(self) -> int | None:
        return self.k_at(self.random_sufficiency.mean(1))

    # -- labels ----------------------------------------------------------------------------------
    def to_dataframe(self) -> pd.DataFrame:
        """One row per k: the columns of ``faithfulness.csv``."""
        rs, rn = self.random_sufficiency, self.random_necessity
        return pd.DataFrame(
            {
                "k": self.ks,
                "sufficiency": self.sufficiency.numpy(),
                "necessity": self.necessity.numpy(),
                "random_mean": rs.mean(1).numpy(),
                "random_sd": rs.std(1, unbiased=False).numpy(),
                "random_necessity_mean": rn.mean(1).numpy(),
                "random_necessity_sd": rn.std(1, unbiased=False).numpy(),
            }
        )[COLUMNS]

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready: table, k80s, sets, per-draw and per-pair values, raw metrics."""
        rs, rn = self.random_sufficiency.tolist(), self.random_necessity.tolist()
        return {
            "format_version": FORMAT_VERSION,
            "k80": self.k80,
            "random_k80": self.random_k80,
            "m_toxic": float(self.m_toxic.mean()),
            "m_benign": float(self.m_benign.mean()),
            "table": self.to_dataframe().to_dict("records"),
            "top_sets": [{"k": k, "components": s} for k, s in zip(self.ks, self.top_sets)],
            "random_draws": [
                {
                    "k": k,
                    "draws": [
                        {"components": s, "sufficiency": a, "necessity": b}
                        for s, a, b in zip(self.random_sets[i], rs[i], rn[i])
                    ],
                }
                for i, k in enumerate(self.ks)
            ],
            "per_pair": {
                "sufficiency": self.per_pair_sufficiency.tolist(),
                "necessity": self.per_pair_necessity.tolist(),
            },
            "raw": {
                "m_toxic": self.m_toxic.tolist(),
                "m_benign": self.m_benign.tolist(),
                "suff_patched": self.suff_patched.tolist(),
                "nec_patched": self.nec_patched.tolist(),
                "random_suff_patched": self.random_suff_patched.tolist(),
                "random_nec_patched": self.random_nec_patched.tolist(),
            },
            "metadata": self.metadata,
        }

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``faithfulness.csv`` and ``result.json`` (``extra`` merged into it), each atomically."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        frame = self.to_dataframe()
        atomic_file(out / "faithfulness.csv", lambda p: frame.to_csv(p, index=False))
        text = json.dumps(json_safe({**self.to_dict(), **(extra or {})}), indent=2, allow_nan=False)
        atomic_file(out / "result.json", lambda p: Path(p).write_text(text))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> FaithfulnessResult:
        path = Path(directory) / "result.json"
        if not path.is_file():
            raise ToxlensError(f"{str(directory)!r} holds no circuit result (no result.json)")
        data = json.loads(path.read_text())
        if data.get("format_version") != FORMAT_VERSION or "raw" not in data:
            raise ToxlensError(f"{path}: not a circuit result of format_version {FORMAT_VERSION}")
        raw = {k: torch.tensor(v, dtype=torch.float32) for k, v in data["raw"].items()}
        ks = [int(t["k"]) for t in data["top_sets"]]
        return cls(
            ks=ks,
            top_sets=[t["components"] for t in data["top_sets"]],
            random_sets=[[d["components"] for d in r["draws"]] for r in data["random_draws"]],
            m_toxic=raw["m_toxic"],
            m_benign=raw["m_benign"],
            suff_patched=raw["suff_patched"].reshape(-1, len(ks)),
            nec_patched=raw["nec_patched"].reshape(-1, len(ks)),
            random_suff_patched=raw["random_suff_patched"],
            random_nec_patched=raw["random_nec_patched"],
            metadata=data["metadata"],
        )
