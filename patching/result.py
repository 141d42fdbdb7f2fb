"""`PatchResult`: a labelled patching result.

It stores only what cannot be derived — the metric under each patch for each pair (``patched``,
``[pair, *dims]``) and the unpatched metrics ``m_toxic`` / ``m_benign`` per pair — plus axis names,
coordinates and metadata. Everything else is computed from them:

* ``per_pair``  = (patched_i − m_benign_i) / (m_toxic_i − m_benign_i), each pair normalised by itself;
* ``mean``      = (mean_i patched_i − mean_i m_benign_i) / (mean_i m_toxic_i − mean_i m_benign_i),
  the issue's score with ``m`` averaged over pairs (a ratio of means: stable when one pair's own
  denominator is near zero);
* ``ci_low`` / ``ci_high``: percentile bootstrap of ``mean`` over pairs (``n_boot`` resamples,
  ``ci_level``, ``seed`` — all recorded in ``metadata``).

For attribution results ``patched`` is the first-order estimate ``m_benign_i + Δ̂_i``.
Saved as ``result.safetensors`` (tensors) + ``result.json`` (labels, metadata). No pickle.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor

from lens.errors import ToxlensError
from lens.io import atomic_file, json_safe

FORMAT_VERSION = 1


@dataclass
class PatchResult:
    method: str
    dims: tuple[str, ...]
    coords: dict[str, list[Any]]
    patched: Float[Tensor, "pair ..."]
    m_toxic: Float[Tensor, "pair"]
    m_benign: Float[Tensor, "pair"]
    metadata: dict[str, Any] = field(default_factory=dict)
    _ci: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.dims = tuple(self.dims)
        shape = tuple(len(self.coords[d]) for d in self.dims) if set(self.dims) <= set(self.coords) else None
        if shape is None:
            raise ToxlensError(f"coords {sorted(self.coords)} do not cover dims {self.dims}")
        n = self.m_toxic.shape[0]
        if self.patched.shape != (n, *shape) or self.m_benign.shape != (n,):
            raise ToxlensError(
                f"patched has shape {tuple(self.patched.shape)}, expected {(n, *shape)} for dims {self.dims}"
            )
        self.patched = self.patched.detach().float().cpu()
        self.m_toxic = self.m_toxic.detach().float().cpu()
        self.m_benign = self.m_benign.detach().float().cpu()
        self.metadata.setdefault("ci_level", 0.95)
        self.metadata.setdefault("n_boot", 1000)
        self.metadata.setdefault("bootstrap_seed", 0)

    # -- derived numbers -----------------------------------------------------------------------
    @property
    def n_pairs(self) -> int:
        return int(self.m_toxic.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.patched.shape[1:])

    @property
    def per_pair(self) -> Float[Tensor, "pair ..."]:
        view = (-1,) + (1,) * len(self.dims)
        denom = (self.m_toxic - self.m_benign).view(view)
        return (self.patched - self.m_benign.view(view)) / denom

    @property
    def mean(self) -> Float[Tensor, "..."]:
        return _ratio_of_means(self.patched.mean(0), self.m_toxic.mean(), self.m_benign.mean())

    @property
    def ci_low(self) -> Tensor:
        return self._bootstrap()[0]

    @property
    def ci_high(self) -> Tensor:
        return self._bootstrap()[1]

    def _bootstrap(self) -> tuple[Tensor, Tensor]:
        if self._ci is None:
            n_boot = int(self.metadata["n_boot"])
            level = float(self.metadata["ci_level"])
            gen = torch.Generator().manual_seed(int(self.metadata["bootstrap_seed"]))
            n = self.n_pairs
            idx = torch.randint(0, n, (n_boot, n), generator=gen)
            weights = torch.zeros(n_boot, n).scatter_add_(1, idx, torch.ones(n_boot, n)) / n
            flat = self.patched.reshape(n, -1)
            boot = _ratio_of_means(
                weights @ flat, (weights @ self.m_toxic)[:, None], (weights @ self.m_benign)[:, None]
            )
            alpha = (1 - level) / 2
            q = torch.quantile(boot, torch.tensor([alpha, 1 - alpha]), dim=0)
            self._ci = (q[0].reshape(self.shape), q[1].reshape(self.shape))
        return self._ci

    # -- shards ----------------------------------------------------------------------------------
    def select(self, indices: Sequence[int]) -> PatchResult:
        """The rows (pairs) ``indices`` only, in that order (same cells and metadata)."""
        idx = torch.tensor(list(indices), dtype=torch.long)
        return PatchResult(
            self.method,
            self.dims,
            self.coords,
            self.patched[idx],
            self.m_toxic[idx],
            self.m_benign[idx],
            dict(self.metadata),
        )

    @classmethod
    def concat(
        cls,
        parts: Sequence[PatchResult],
        indices: Sequence[Sequence[int]],
        metadata: dict[str, Any] | None = None,
    ) -> PatchResult:
        """Merge shard results: row ``j`` of ``parts[k]`` is pair ``indices[k][j]`` of the whole set.

        The per-pair values are stored exactly, so ``mean``, the bootstrap CI and everything else derived
        from the merged result equal those of one run over the whole set with the same per-pair values.
        ``metadata`` (default: the first part's) labels the merged result."""
        if not parts or len(parts) != len(indices):
            raise ToxlensError(
                f"concat needs one index list per part, got {len(parts)} parts, {len(indices)} lists"
            )
        first = parts[0]
        for part, idx in zip(parts, indices):
            if (part.method, part.dims, part.coords) != (first.method, first.dims, first.coords):
                raise ToxlensError(
                    f"cannot merge a {part.method} result over {part.dims} with a {first.method} result "
                    f"over {first.dims}; expected shards of the same sweep"
                )
            if part.n_pairs != len(idx):
                raise ToxlensError(f"a shard holds {part.n_pairs} pairs but {len(idx)} indices")
        order = torch.tensor([i for idx in indices for i in idx], dtype=torch.long)
        n = len(order)
        if sorted(order.tolist()) != list(range(n)):
            raise ToxlensError(f"shard indices must cover pairs 0..{n - 1} once each")
        inverse = torch.empty(n, dtype=torch.long)
        inverse[order] = torch.arange(n)
        return cls(
            first.method,
            first.dims,
            first.coords,
            torch.cat([p.patched for p in parts])[inverse],
            torch.cat([p.m_toxic for p in parts])[inverse],
            torch.cat([p.m_benign for p in parts])[inverse],
            dict(first.metadata if metadata is None else metadata),
        )

    # -- labels ----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """One name per cell, in row-major order of ``dims``."""
        cells = itertools.product(*(self.coords[d] for d in self.dims))
        return [_cell_name(self.dims, cell, self.metadata.get("component")) for cell in cells]

    def to_dataframe(self) -> pd.DataFrame:
        """One row per cell: name, the coordinates, score (mean), ci_low, ci_high."""
        cells = list(itertools.product(*(self.coords[d] for d in self.dims)))
        frame = pd.DataFrame(cells, columns=list(self.dims))
        frame.insert(0, "name", self.names())
        frame["score"] = self.mean.reshape(-1).numpy()
        frame["ci_low"] = self.ci_low.reshape(-1).numpy()
        frame["ci_high"] = self.ci_high.reshape(-1).numpy()
        frame["method"] = self.method
        return frame

    def top_k(self, k: int = 10, absolute: bool = False) -> pd.DataFrame:
        """The ``k`` cells with the largest score (or largest ``|score|``), best first."""
        if k < 1:
            raise ToxlensError(f"top_k needs k >= 1, got {k}")
        frame = self.to_dataframe()
        key = frame["score"].abs() if absolute else frame["score"]
        order = key.sort_values(ascending=False, kind="stable").index[:k]
        return frame.loc[order].reset_index(drop=True)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``result.safetensors`` + ``result.json`` into ``directory`` (each file atomically)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {
            "patched": self.patched.contiguous(),
            "m_toxic": self.m_toxic.contiguous(),
            "m_benign": self.m_benign.contiguous(),
            "mean": self.mean.contiguous(),
            "ci_low": self.ci_low.contiguous(),
            "ci_high": self.ci_high.contiguous(),
        }
        header = {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "dims": list(self.dims),
            "coords": self.coords,
            "metadata": self.metadata,
        }
        atomic_file(out / "result.safetensors", lambda p: save_file(tensors, str(p)))
        atomic_file(
            out / "result.json",
            lambda p: Path(p).write_text(json.dumps(json_safe(header), indent=2, default=str)),
        )
        return out

    @classmethod
    def load(cls, directory: str | Path) -> PatchResult:
        d = Path(directory)
        js, st = d / "result.json", d / "result.safetensors"
        if not js.is_file() or not st.is_file():
            raise ToxlensError(
                f"{str(d)!r} holds no saved PatchResult (need result.json and result.safetensors)"
            )
        header = json.loads(js.read_text())
        if header.get("format_version") != FORMAT_VERSION:
            raise ToxlensError(
                f"{js}: format_version {header.get('format_version')!r}, expected {FORMAT_VERSION}"
            )
        t = load_file(str(st))
        return cls(
            header["method"],
            tuple(header["dims"]),
            header["coords"],
            t["patched"],
            t["m_toxic"],
            t["m_benign"],
            header["metadata"],
        )


def _ratio_of_means(patched: Tensor, m_toxic: Tensor, m_benign: Tensor) -> Tensor:
    return (patched - m_benign) / (m_toxic - m_benign)


def _cell_name(dims: tuple[str, ...], cell: tuple[Any, ...], component: str | None) -> str:
    c = dict(zip(dims, cell))
    if "component" in c:
        return f"{c['component']}@{c['position']}" if "position" in c else str(c["component"])
    if "head" in c:
        base = f"L{c['layer']}H{c['head']}"
    elif component:
        base = f"L{c['layer']}.{component}"
    else:
        base = f"L{c['layer']}"
    return f"{base}@{c['pos']}" if "pos" in c else base
