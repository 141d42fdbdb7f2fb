"""The saved linear probe: :class:`Probe` (score raw residual vectors) and its on-disk format.

``direction`` is the unit vector of the un-standardised weights (``w / std``) in residual space.
Saved as ``probe.safetensors`` (tensors ``weight``, ``mean``, ``std``, ``direction``) + ``probe.json``
(layer, hook, pooling, bias and every recorded choice); never pickle. :meth:`Probe.load` checks both
files and reports a broken one as a :class:`~lens.errors.ToxlensError` naming the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor

from lens.errors import ToxlensError
from lens.hooks import resid_post_name, resid_pre_name
from lens.io import atomic_file

HOOKS: dict[str, Callable[[int], str]] = {"resid_post": resid_post_name, "resid_pre": resid_pre_name}
POOLINGS = ("mean", "last")  # text poolings of collect_residuals
MONITOR_POOLINGS = ("token", "max")  # trained on single-token residuals: usable as generation monitors
ALL_POOLINGS = (*POOLINGS, *MONITOR_POOLINGS)
TENSORS = ("weight", "mean", "std")
FORMAT_VERSION = 1
TEXT_PROBE_REASON = (
    "it is a text classifier (pooling={pooling}: trained on residuals pooled over whole texts), not a "
    "token monitor; train one with `toxlens probe train --pooling max` (the default) or --pooling token"
)


@dataclass
class Probe:
    layer: int
    hook: str
    pooling: str
    weight: Float[Tensor, "d_model"]
    bias: float
    mean: Float[Tensor, "d_model"]
    std: Float[Tensor, "d_model"]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> Float[Tensor, "d_model"]:
        """Unit vector in residual space along which the logit grows (``weight / std``, normalised)."""
        raw = self.weight / self.std
        return raw / raw.norm()

    def logit(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "..."]:
        if resid.shape[-1] != self.weight.shape[0]:
            raise ToxlensError(
                f"resid has last dimension {resid.shape[-1]}, expected d_model={self.weight.shape[0]}"
            )
        w, mu, sd = (t.to(resid.device) for t in (self.weight, self.mean, self.std))
        return ((resid.float() - mu) / sd) @ w + self.bias

    def score(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "..."]:
        """Probability of the positive (toxic) class for each residual vector."""
        return torch.sigmoid(self.logit(resid))

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {"weight": self.weight, "mean": self.mean, "std": self.std, "direction": self.direction}
        tensors = {k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}
        atomic_file(out / "probe.safetensors", lambda p: save_file(tensors, p))
        header = {
            "format_version": FORMAT_VERSION,
            "layer": self.layer,
            "hook": self.hook,
            "pooling": self.pooling,
            "bias": self.bias,
            **self.metadata,
        }
        atomic_file(out / "probe.json", lambda p: Path(p).write_text(json.dumps(header, indent=2)))
        return out

    @property
    def is_monitor(self) -> bool:
        """Whether the probe was trained on single-token residuals (``pooling`` ``token`` or ``max``), i.e.
        on what a generation monitor reads; ``probe.json``'s ``monitor`` field wins when present."""
        return bool(self.metadata.get("monitor", self.pooling in MONITOR_POOLINGS))

    def monitor_refusal(self) -> str | None:
        """Why this probe cannot monitor generated tokens (``None`` when it can)."""
        if self.is_monitor:
            return None
        reason = self.metadata.get("monitor_reason") or TEXT_PROBE_REASON.format(pooling=self.pooling)
        return str(reason)

    @classmethod
    def load(cls, directory: str | Path) -> Probe:
        """Read ``probe.json`` + ``probe.safetensors``; any damage (invalid JSON, a truncated tensor file,
        a missing tensor or field, a shape mismatch) is a :class:`ToxlensError` naming the file."""
        d = Path(directory)
        js, st = d / "probe.json", d / "probe.safetensors"
        if not js.is_file() or not st.is_file():
            raise ToxlensError(f"{str(d)!r} holds no saved probe: expected probe.json and probe.safetensors")
        try:
            meta = json.loads(js.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ToxlensError(
                f"{js}: not valid JSON ({err}); expected the probe.json of a saved probe"
            ) from err
        if not isinstance(meta, dict):
            raise ToxlensError(f"{js}: expected a JSON object, got {type(meta).__name__}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ToxlensError(
                f"{js}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
            )
        missing = [k for k in ("layer", "hook", "pooling", "bias") if k not in meta]
        if missing:
            raise ToxlensError(f"{js}: missing field(s) {missing}; expected layer, hook, pooling and bias")
        try:
            t = load_file(str(st))
        except Exception as err:  # safetensors raises its own error types for a damaged file
            raise ToxlensError(
                f"{st}: not a readable safetensors file ({type(err).__name__}: {err}); "
                "expected the tensors of a saved probe (truncated or overwritten?)"
            ) from err
        absent = [k for k in TENSORS if k not in t]
        if absent:
            raise ToxlensError(
                f"{st}: missing tensor(s) {absent}; expected {list(TENSORS)}, found {sorted(t)}"
            )
        shapes = {k: tuple(t[k].shape) for k in TENSORS}
        if len(set(shapes.values())) != 1 or len(shapes["weight"]) != 1:
            raise ToxlensError(f"{st}: tensor shapes {shapes}; expected the same (d_model,) for each")
        core = {k: meta.pop(k) for k in ("layer", "hook", "pooling", "bias")}
        meta.pop("format_version")
        layer, hook, pooling, bias = core["layer"], core["hook"], core["pooling"], core["bias"]
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise ToxlensError(f"{js}: layer {layer!r}; expected an integer >= 0")
        if hook not in HOOKS:
            raise ToxlensError(f"{js}: hook {hook!r}; expected one of {sorted(HOOKS)}")
        if pooling not in ALL_POOLINGS:
            raise ToxlensError(f"{js}: pooling {pooling!r}; expected one of {list(ALL_POOLINGS)}")
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
            raise ToxlensError(f"{js}: bias {bias!r}; expected a finite number")
        return cls(layer, hook, pooling, t["weight"], float(bias), t["mean"], t["std"], meta)
