"""``toxlens generate``: sample continuations with optional probe monitoring, rollback and steering.

Thin layer over :func:`interventions.generate.generate`. Flags, the probe and any steering-vector file
are checked before the model is loaded. Nothing is written to disk; the output goes to stdout (readable
text, or with ``--json`` one JSON object per prompt, one per line).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError
from toxlens.common import check_model_early, load_from_args
from toxlens.generate_args import add_parser, check_flags, default_safe_threshold

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    from interventions.policy import RollbackPolicy
    from interventions.sampling import Sampling
    from lens.probe import Probe

    check_flags(args)
    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.greedy)
    probe = Probe.load(args.probe) if args.probe is not None else None
    policy: RollbackPolicy | None = None
    if args.threshold is not None:
        assert probe is not None
        refusal = probe.monitor_refusal()
        if refusal is not None:
            raise ToxlensError(f"--probe {args.probe!r} cannot monitor generation (--threshold): {refusal}")
        d = RollbackPolicy()
        policy = RollbackPolicy(
            safe_threshold=default_safe_threshold(args.threshold)
            if args.safe_threshold is None
            else args.safe_threshold,
            budget=d.budget if args.budget is None else args.budget,
            on_budget=d.on_budget if args.on_budget is None else args.on_budget,
            steer_scale=d.steer_scale if args.correct_scale is None else args.correct_scale,
            steer_tokens=d.steer_tokens if args.correct_tokens is None else args.correct_tokens,
            steer_layer=args.correct_layer,
            forbid_token=not args.no_forbid,
        )
        if not 0 <= policy.safe_threshold <= args.threshold:
            raise ToxlensError(
                f"--safe-threshold must be in [0, --threshold={args.threshold}], got {policy.safe_threshold}"
            )

    from interventions.generate import generate

    check_model_early(args, {"--steer-layer": args.steer_layer, "--correct-layer": args.correct_layer})
    model = load_from_args(args)
    if probe is not None and probe.weight.shape[0] != model.info.d_model:
        raise ToxlensError(
            f"probe {args.probe!r} has d_model {probe.weight.shape[0]} but model {args.model!r} has "
            f"{model.info.d_model}; it was trained on {probe.metadata.get('spec')!r}"
        )
    steer, steer_info = _steer(args, model, probe)
    results = generate(
        model,
        list(args.prompt),
        args.max_new_tokens,
        seed=args.seed,
        sampling=sampling,
        steer=[steer] if steer is not None else [],
        monitor=probe,
        threshold=args.threshold,
        policy=policy,
        batch_size=args.batch_size,
        prepend_bos=args.prepend_bos,
        stop_at_eos=not args.ignore_eos,
    )
    settings: dict[str, Any] = {
        "model": args.model,
        "device": str(model.device),
        "dtype": args.dtype,
        "device_map": model.info.device_map,
        "max_memory": args.max_memory,
        "model_info": model.info.to_dict(),
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "sampling": sampling.to_dict(),
        "stop_at_eos": not args.ignore_eos,
        "prepend_bos": bool(args.prepend_bos),
        "batch_size": args.batch_size,
        "probe": None if probe is None else _probe_info(args.probe, probe),
        "threshold": args.threshold,
        "policy": None if policy is None else policy.to_dict(),
        "steer": steer_info,
    }
    for g in results:
        record = g.to_dict()
        record["token_texts"] = [model.tokenizer.decode([t]) for t in g.tokens]
        record["threshold"] = args.threshold
        record["safe_threshold"] = None if policy is None else policy.safe_threshold
        record["settings"] = settings
        if args.json:
            print(json.dumps(record, ensure_ascii=False))
        else:
            _print_text(record, probe is not None)
    return 0


def _probe_info(path: str, probe: Any) -> dict[str, Any]:
    from toxlens.common import file_sha256

    return {
        "path": str(path),
        "sha256": file_sha256(Path(path) / "probe.safetensors"),
        "layer": probe.layer,
        "hook": probe.hook,
        "pooling": probe.pooling,
        "spec": probe.metadata.get("spec"),
        "auc": probe.metadata.get("auc"),
    }


def _steer(args: argparse.Namespace, model: Any, probe: Any) -> tuple[Any, dict[str, Any] | None]:
    from interventions.steering import Steer, vector_from_spec
    from toxlens.common import file_sha256

    v = args.steer_vector
    if v is None:
        return None, None
    vector = vector_from_spec(v, model, probe)
    source: dict[str, Any]
    if v == "probe":
        source = {"kind": "probe", "path": str(args.probe)}
    elif v.endswith(".safetensors"):
        source = {"kind": "file", "path": v, "sha256": file_sha256(v)}
    else:
        source = {"kind": "value_vector", "neuron": v}
    steer = Steer(
        vector,
        args.steer_layer,
        1.0 if args.steer_scale is None else args.steer_scale,
        args.steer_positions or "all",
        args.steer_site or "resid_pre",
    )
    steer.check(model)
    return steer, {"vector": v, **source, **steer.describe()}


def _print_text(rec: dict[str, Any], monitored: bool) -> None:
    print(f"prompt: {rec['prompt']!r}")
    print(f"continuation: {rec['text']!r}")
    if monitored and rec["scores"]:
        print(f"probe scores: max {max(rec['scores']):.3f}, last {rec['scores'][-1]:.3f}")
    rb = rec["rollbacks"]
    if rb:
        parts = "; ".join(f"at {r['at']} -> {r['to']} (discarded {r['discarded']})" for r in rb)
        print(f"rollbacks: {len(rb)}: {parts}")
    else:
        print("rollbacks: none")
    print(
        f"finish: {rec['finish_reason']}; tokens {len(rec['tokens'])}; forward_tokens {rec['forward_tokens']} "
        f"(recomputed {rec['recomputed']}); seed {rec['seed']}"
    )
    print()
