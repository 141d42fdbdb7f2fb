"""Write the model behind a :class:`~lens.model.LensModel` as a standard Hugging Face model directory.

The bridge wraps the HF modules in place, so the wrapped model's own ``state_dict`` carries bridge
names (``…._original_component.…`` and aliases). :func:`export_hf` maps every tensor back to the name
a freshly built model of the same config expects (dropping the ``_original_component.`` segments),
loads them into that model (built on the meta device and assigned the real tensors: no copy of the
weights), re-ties tied weights and calls ``save_pretrained`` — so the directory loads with
``AutoModelForCausalLM.from_pretrained`` exactly like the original checkpoint format.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lens.errors import ToxlensError
from lens.model import LensModel


def hf_state_dict(model: LensModel) -> dict[str, torch.Tensor]:
    """The HF-named state dict of the wrapped model (current weights, edits included)."""
    from transformers import AutoModelForCausalLM

    hf = model.bridge.original_model
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(hf.config)
    wanted = set(fresh.state_dict())
    found: dict[str, torch.Tensor] = {}
    for name, tensor in hf.state_dict().items():
        clean = name.replace("_original_component.", "")
        if clean in wanted and clean not in found:
            found[clean] = tensor
    missing = sorted(wanted - set(found))
    if missing:
        raise ToxlensError(
            f"cannot export {model.spec!r}: no weights found for {missing[:5]} "
            f"({len(missing)} of {len(wanted)} expected tensors)"
        )
    return found


def export_hf(model: LensModel, directory: str | Path) -> None:
    """``save_pretrained`` (safetensors) of the model's current weights and its tokenizer into ``directory``."""
    from transformers import AutoModelForCausalLM

    state = hf_state_dict(model)
    config = model.bridge.original_model.config
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(state, strict=True, assign=True)
    fresh.tie_weights()
    fresh.eval()
    fresh.save_pretrained(str(directory), safe_serialization=True)
    model.tokenizer.save_pretrained(str(directory))
