"""``toxlens edit``: fold a neuron edit into the weights and export a standard Hugging Face model directory.

``toxlens edit --model SPEC --method dampen|dampen-random|surgery|project --from LOCATE_DIR --out MODEL_DIR``
loads the model, applies the edit method of :mod:`interventions.edit_methods` built from the neuron
ranking in ``LOCATE_DIR`` (``toxlens locate --texts``), and writes ``MODEL_DIR`` with
``save_pretrained`` (``config.json``, ``model.safetensors``, tokenizer files) plus ``toxlens_edit.json``
(method, parameters, source ranking and model, parameters changed). The directory loads with
``transformers.AutoModelForCausalLM.from_pretrained(MODEL_DIR)`` and with ``toxlens --model MODEL_DIR``.
Only weight edits can be exported; ``subtract`` acts during generation and is refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError
from toxlens.common import file_sha256, model_args, parse_edit_params


def add_parser(sub: Any) -> None:
    from interventions.edit_methods import EDIT_METHODS

    foldable = sorted(n for n, m in EDIT_METHODS.items() if m.foldable)
    p = sub.add_parser(
        "edit",
        help="fold a neuron edit into the weights and write a Hugging Face model directory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model_args(p)
    p.add_argument("--method", required=True, choices=foldable, help="the weight edit to fold in")
    p.add_argument("--from", dest="from_dir", required=True, help="`toxlens locate --texts` output directory")
    p.add_argument(
        "--edit-param",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="override a parameter of the method, e.g. min_auroc=0.6 or layers=[10,11] (repeatable)",
    )
    p.add_argument("--out", required=True, help="model directory to write (atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace a model directory toxlens wrote")


def run(args: argparse.Namespace) -> int:
    from interventions.edit_methods import get_method
    from lens.io import atomic_directory, check_output_dir
    from lens.loading import check_model_spec, resolve_device
    from patching.neuron_result import NeuronRanking

    method = get_method(args.method)
    if not method.foldable:
        raise ToxlensError(f"--method {args.method!r} acts during generation and cannot be exported")
    items = [f"{args.method}.{kv}" for kv in (args.edit_param or [])]
    params = method.resolve(parse_edit_params(items).get(args.method))
    ranking = NeuronRanking.load(args.from_dir)
    inputs = [args.model, args.from_dir]
    check_output_dir(Path(args.out), args.overwrite, inputs)
    check_model_spec(args.model)
    resolve_device(args.device)
    from lens.loading import load_model

    model = load_model(args.model, args.device, args.dtype)
    edit = method(model, ranking, params)
    record = {
        "method": args.method,
        "params": params,
        "description": edit.description,
        "params_changed": edit.n_changed,
        "units": edit.n_units,
        "source_model": args.model,
        "source_model_info": model.info.to_dict(),
        "ranking": str(args.from_dir),
        "ranking_sha256": file_sha256(Path(args.from_dir) / "ranking.safetensors"),
    }
    with atomic_directory(args.out, args.overwrite, inputs) as stage:
        export_model(model, stage)
        (stage / "toxlens_edit.json").write_text(json.dumps(record, indent=2, default=str))
    edit.undo()
    print(f"{edit.description}: {edit.n_changed} parameters changed")
    print(f"wrote {args.out} (load with AutoModelForCausalLM.from_pretrained or --model {args.out})")
    return 0


def export_model(model: Any, directory: Path) -> None:
    """``save_pretrained`` of the HF model behind the bridge (with every active weight edit) and its
    tokenizer; hook edits are not part of the weights and are refused."""
    from interventions.edits import active_edits

    hooked = [e.description for e in active_edits(model) if not e._params]
    if hooked:
        raise ToxlensError(f"cannot export hook edits {hooked}; expected weight edits only")
    from lens.export import export_hf

    export_hf(model, directory)
