"""Benchmark: the whole ``toxlens locate --method activation`` vs TransformerLens's activation patching.

    .venv/bin/python bench/bench_locate.py [--model smollm2-135m] [--pairs data/pairs.jsonl] [--n-pairs N]
                                           [--threads T] [--no-cold] [--no-tl-process]

Side by side, on the same model and pairs:
  (a) TransformerLens ``patching.get_act_patch_attn_head_out_all_pos`` over all pairs (in this process,
      as bench/bench_patching.py does), and its whole process — import + load (no toxlens cache) + sweep —
      in a subprocess;
  (b) the whole ``python -m toxlens locate --method activation`` process in a subprocess, with a warm
      converted-model cache (and, unless --no-cold, once with a cold one first);
  (c) toxlens's patching alone: ``activation_patching(target="heads")`` in this process.
Checks the scores agree (per-head metric of (a) vs (c), and (b)'s components.csv head scores vs (a)
normalised; max |diff| <= 1e-4) and prints the ratios. ``--threads`` fixes torch's thread count in every
process (default: torch's own); on a shared, busy CPU one thread avoids spin-wait slowdowns.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

TOL = 1e-4


def setup(args: argparse.Namespace, pairs_file: str):  # type: ignore[no-untyped-def]
    from lens.loading import load_model
    from lens.metrics import ToxicLogMass
    from lens.prompts import load_pairs
    from lens.tokens import toxic_token_set

    model = load_model(args.model, args.device)
    pairs = load_pairs(pairs_file, model)
    tokens = toxic_token_set(model.tokenizer)
    return model, pairs, ToxicLogMass(tokens.ids, tokens.to_dict())


def tl_child(args: argparse.Namespace) -> None:
    """The TransformerLens process: import + load + head sweep (run as a subprocess)."""
    from bench_patching import tl_head_sweep

    model, pairs, metric = setup(args, args.pairs)
    t0 = time.perf_counter()
    tl_head_sweep(model, pairs, metric)
    print(json.dumps({"sweep_s": time.perf_counter() - t0}))


def timed_process(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--pairs", default=str(ROOT / "data" / "pairs.jsonl"))
    ap.add_argument("--n-pairs", type=int, default=None, help="first N pairs only (default: all)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache locate run")
    ap.add_argument("--no-tl-process", action="store_true", help="skip TransformerLens's whole process")
    ap.add_argument("--tl-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    env = dict(os.environ)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    if args.tl_child:
        tl_child(args)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-locate-"))
    lines = [ln for ln in Path(args.pairs).read_text(encoding="utf-8").splitlines() if ln.strip()]
    pairs_file = tmp / "pairs.jsonl"
    pairs_file.write_text("\n".join(lines[: args.n_pairs]) + "\n", encoding="utf-8")
    env["TOXLENS_CACHE"] = str(tmp / "cache")
    locate_cmd = [
        sys.executable,
        "-m",
        "toxlens",
        "locate",
        "--model",
        args.model,
        "--pairs",
        str(pairs_file),
    ]
    locate_cmd += ["--method", "activation", "--no-progress", "--overwrite", "--out", str(tmp / "out")]
    if args.device:
        locate_cmd += ["--device", args.device]

    # (b) the whole toxlens process: cold cache (conversion + write), then warm
    t_cold = None
    if not args.no_cold:
        t_cold, _ = timed_process(locate_cmd, env)
    t_warm, _ = timed_process(locate_cmd, env)
    if t_cold is None:  # the first run above filled the cache: time a warm one
        t_warm, _ = timed_process(locate_cmd, env)
    result = json.loads((tmp / "out" / "result.json").read_text())
    stages = result["wall_time_s"]

    # (a) TransformerLens: whole process (no toxlens cache), then the sweep in this process
    t_tl_proc = None
    if not args.no_tl_process:
        child = [sys.executable, str(Path(__file__).resolve()), "--tl-child", "--model", args.model]
        child += ["--pairs", str(pairs_file)] + (["--device", args.device] if args.device else [])
        t_tl_proc, _ = timed_process(child, {**env, "TOXLENS_CACHE": "off"})
    from bench_patching import tl_head_sweep

    from patching.activation import activation_patching

    model, pairs, metric = setup(args, str(pairs_file))
    with torch.no_grad():  # warm-up (first-call set-up inside the bridge)
        model.final_logits(pairs.tokens(next(iter(pairs.length_groups().values()))[:1], "benign"))
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # TransformerLens's own per-head progress bar
        tl = tl_head_sweep(model, pairs, metric)
    t_tl = time.perf_counter() - t0
    # (c) toxlens patching only
    t0 = time.perf_counter()
    res = activation_patching(model, pairs, metric, "heads", progress=False)
    t_tx = time.perf_counter() - t0

    diff = float((res.patched.mean(0) - tl).abs().max())
    mt, mb = float(res.m_toxic.mean()), float(res.m_benign.mean())
    tl_score = ((tl - mb) / (mt - mb)).flatten()
    import pandas as pd

    table = pd.read_csv(tmp / "out" / "components.csv")
    heads = table[table["kind"] == "head"].sort_values(["layer", "head"])
    diff_locate = float((torch.tensor(heads["score_activation"].to_numpy()) - tl_score.double()).abs().max())

    print(
        f"model {args.model}, {len(pairs)} pairs, lengths { ({k: len(v) for k, v in pairs.length_groups().items()}) }, "
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPU cores"
    )
    print(f"(a) TransformerLens head sweep (get_act_patch_attn_head_out_all_pos): {t_tl:8.2f} s")
    if t_tl_proc is not None:
        print(f"    TransformerLens whole process (import + GGUF load + sweep):       {t_tl_proc:8.2f} s")
    print(f"(b) toxlens locate --method activation, whole process, warm cache:     {t_warm:8.2f} s")
    print(f"    stages (result.json wall_time_s): {json.dumps({k: round(v, 2) for k, v in stages.items()})}")
    if t_cold is not None:
        print(f"    same, cold cache (GGUF conversion + cache write):                  {t_cold:8.2f} s")
    print(f"(c) toxlens activation_patching(target='heads') only:                  {t_tx:8.2f} s")
    print(
        f"same scores: per-head metric (a) vs (c) max |diff| = {diff:.2e}; "
        f"locate components.csv head scores vs (a) max |diff| = {diff_locate:.2e}"
    )
    print(f"ratio TL sweep / toxlens patching:               {t_tl / t_tx:6.2f}x")
    print(f"ratio TL sweep / toxlens locate process (warm):  {t_tl / t_warm:6.2f}x")
    if t_tl_proc is not None:
        print(f"ratio TL process / toxlens locate process (warm): {t_tl_proc / t_warm:6.2f}x")
    if diff > TOL or diff_locate > TOL:
        raise SystemExit("scores differ between TransformerLens and toxlens")


if __name__ == "__main__":
    main()
