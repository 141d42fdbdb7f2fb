"""toxlens: locate toxicity circuits in decoder LMs and act on them.

The entry points a notebook needs, imported on first use (``import toxlens`` itself loads no torch)::

    import toxlens
    model = toxlens.load_model("smollm2-135m")
    pairs = toxlens.load_pairs("data/pairs.jsonl", model)
    result = toxlens.locate(model, pairs, metric)          # patching.locate.locate
    with toxlens.ablate(model, ["L1H0"], mode="zero"): ...  # the edits of interventions.edits
    gens = toxlens.generate(model, ["you are"], 20, seed=0)
    probe = toxlens.Probe.load("runs/probe")
    result = toxlens.evaluate(model, prompts, conditions)

``toxlens.__version__`` is the installed version (``toxlens --version`` prints it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module it lives in (dependencies point lens <- patching <- interventions <- toxlens)
_EXPORTS: dict[str, str] = {
    "load_model": "lens.loading",
    "load_pairs": "lens.prompts",
    "locate": "patching.locate",
    "generate": "interventions.generate",
    "Probe": "lens.probe",
    "Edit": "interventions.edits",
    "ablate": "interventions.edits",
    "scale": "interventions.edits",
    "subtract_direction": "interventions.edits",
    "project_out_weights": "interventions.edits",
    "active_edits": "interventions.edits",
    "undo_all": "interventions.edits",
    "evaluate": "interventions.evaluate",
    "ToxlensError": "lens.errors",
}

__all__ = [
    "Edit",
    "Probe",
    "ToxlensError",
    "__version__",
    "ablate",
    "active_edits",
    "evaluate",
    "generate",
    "load_model",
    "load_pairs",
    "locate",
    "project_out_weights",
    "scale",
    "subtract_direction",
    "undo_all",
]

if TYPE_CHECKING:
    from interventions.edits import (
        Edit,
        ablate,
        active_edits,
        project_out_weights,
        scale,
        subtract_direction,
        undo_all,
    )
    from interventions.evaluate import evaluate
    from interventions.generate import generate
    from lens.errors import ToxlensError
    from lens.loading import load_model
    from lens.probe import Probe
    from lens.prompts import load_pairs
    from patching.locate import locate

    __version__: str


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from toxlens.version import version

        return version()
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'toxlens' has no attribute {name!r}; expected one of {__all__}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
