"""Benchmark: monitored generation (probe read every token, rollback armed) vs plain generation.

    .venv/bin/python bench/bench_generate.py [--model smollm2-135m] [--probe DIR] [--prompts 8]
        [--max-new-tokens 32] [--repeats 3] [--batch-size 16] [--seed 0] [--threads N] [--no-eos] [--out FILE.json]

0. **Against Hugging Face.** ``model.generate`` of the same module (the bridge's HF model) with the same
   prompts, batch size and sampling (temperature 1, no top-k/top-p, left padding, stop at EOS) is timed
   in part 1's loop, interleaved with plain and monitored generation; tokens/s of plain and monitored
   generation are reported relative to it (issue targets: ≥ 0.9 and ≥ 0.85). It runs inside
   :func:`lens.kv_cache.shimmed`, as toxlens does: without it the bridge's attention never writes the KV
   cache, so every step attends to its own token only (garbage text that never reaches EOS, and a cheaper
   forward). Checked first: greedy ``model.generate`` draws the same tokens as greedy toxlens generation.
   Tokens are counted as toxlens counts them: up to each row's EOS, the EOS itself excluded. Two HF runs:
   *sampled* (its own random draws: how many rows reach EOS, and when, differs by chance from toxlens's
   draws, and with 8 rows x 32 tokens one early EOS moves tokens/s by several percent) and *replayed*
   (a logits processor forces, after HF's own logits, exactly the tokens and EOS steps of toxlens's plain
   run; temperature, softmax and multinomial still run on the full vocabulary): the same work on both
   sides, so that ratio compares the implementations. Both ratios are printed and written, from the
   medians and from the best of the repeats on each side (the runs least slowed down by other work), and
   from the median CPU seconds of the process (with ``--threads 1``, the time other work takes the cores
   is left out; the least noisy of the three on a shared machine). With ``--no-eos`` every row runs
   ``--max-new-tokens`` on both sides (toxlens ``stop_at_eos=False``; HF ``min_new_tokens``, which masks
   EOS), so the *sampled* comparison does equal work under each side's own draws (no replayed run then).
1. **Overhead of the monitor.** In one process, after one warm-up of each, alternately times
   ``generate(model, prompts, N, seed=s, sampling=Sampling(temperature=1.0))`` (plain) and the same call
   with ``monitor=probe, threshold=0.99, policy=RollbackPolicy(safe_threshold=0.5)`` (monitored).
   The probe must never fire (checked: zero rollbacks; without ``--probe`` a random-direction probe at
   the middle layer with bias −1e4 is used, whose score is ~0 everywhere), so both calls must return
   the same tokens (checked). Prints median wall times, the ratio monitored / plain (target ≤ 1.10)
   and tokens/s. The monitored call also feeds each sequence's last token (so that token gets a score)
   and builds the tokenizer's word-start table once per call; both are part of the measured cost.
2. **Cost of a rollback.** A scripted probe (a :class:`~lens.probe.Probe` whose ``score`` follows a
   schedule instead of reading the residual) forces exactly one rollback of ``n`` tokens, n = 1, 4, 8,
   on one prompt: it scores 0.6 (≥ safe_threshold, < threshold, so no safe point can form there) on the
   ``n − 1`` tokens after a chosen safe point and 1.0 on the next one. Printed for each ``n``, without
   and with corrective steering (``policy.steer_scale``): the RollbackEvent (discarded tokens),
   ``recomputed``, and ``forward_tokens`` minus that of the same call with a probe that never fires.
   Without corrective steering the difference is ``n`` (the safe point's stored logits are reused); with
   it ``n + 1`` (the safe-point token itself is fed again, with the corrective steer added).

On a CPU shared with other work, ``--threads 1`` avoids thread oversubscription: with torch's default of
one thread per core on 2 busy cores, a decoding step here took about ten times longer and timings were noise.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import LogitsProcessor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interventions.generate import generate
from interventions.policy import Generation, RollbackPolicy
from interventions.sampling import Sampling, word_starts
from lens.kv_cache import shimmed
from lens.loading import load_model
from lens.model import LensModel
from lens.probe import Probe

PROMPTS = (
    "The weather today is",
    "My favourite recipe uses",
    "The best way to learn a new language is",
    "Yesterday I went to the library and",
    "The train to the city leaves at",
    "In the garden we planted",
    "A good book for a long trip is",
    "The museum opens its new exhibition on",
    "To fix a slow computer, first",
    "Our team meeting next week will cover",
    "The river near my house",
    "For breakfast I usually have",
)
THRESHOLD = 0.99
SAFE_THRESHOLD = 0.5
MID_SCORE = 0.6  # >= SAFE_THRESHOLD (blocks safe points) and < THRESHOLD (does not fire)
ROLLBACK_NS = (1, 4, 8)
CORRECTIVE_SCALE = 4.0


def silent_probe(model: LensModel, seed: int) -> Probe:
    """A random unit direction at the middle layer with bias −1e4: sigmoid(logit) is ~0, it never fires."""
    d = model.info.d_model
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=gen)
    w = w / w.norm()
    return Probe(
        model.n_layers // 2,
        "resid_post",
        "mean",
        w,
        -1e4,
        torch.zeros(d),
        torch.ones(d),
        {"note": "random direction, bias -1e4: never fires"},
    )


class ScriptedProbe(Probe):
    """A probe whose score follows a schedule: ``schedule[k]`` for the k-th generated token's forward.

    ``generate`` calls ``score`` once per forward pass on the ``[batch, q, d_model]`` residual: call 0 is
    the prompt, call ``k ≥ 1`` feeds generated token ``k − 1`` (one sequence, no rollback yet). After the
    first score ≥ ``fire_at`` has been returned, every later call scores 0.
    """

    def __init__(self, base: Probe, schedule: dict[int, float], fire_at: float) -> None:
        super().__init__(base.layer, base.hook, base.pooling, base.weight, base.bias, base.mean, base.std)
        self.schedule, self.fire_at = schedule, fire_at
        self.calls, self.fired = 0, False

    def score(self, resid: Tensor) -> Tensor:
        out = torch.zeros(resid.shape[:-1])
        if self.calls > 0 and not self.fired:
            value = self.schedule.get(self.calls - 1, 0.0)
            out[...] = value
            self.fired = value >= self.fire_at
        self.calls += 1
        return out


def token_count(gens: list[Generation]) -> int:
    return sum(len(g.tokens) for g in gens)


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def cpu_timed(fn: Any) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds of this process (not counting time other work took the cores), result."""
    c0 = time.process_time()
    t, out = timed(fn)
    return t, time.process_time() - c0, out


def overhead(
    args: argparse.Namespace, model: LensModel, probe: Probe, prompts: list[str], hf: dict[str, Any]
) -> dict[str, Any]:
    sampling = Sampling(temperature=1.0)
    policy = RollbackPolicy(safe_threshold=SAFE_THRESHOLD)

    common: dict[str, Any] = dict(
        seed=args.seed, sampling=sampling, batch_size=args.batch_size, stop_at_eos=not args.no_eos
    )

    def plain() -> list[Generation]:
        return generate(model, prompts, args.max_new_tokens, **common)

    def monitored() -> list[Generation]:
        return generate(
            model, prompts, args.max_new_tokens, monitor=probe, threshold=THRESHOLD, policy=policy, **common
        )

    first = plain()  # warm-up of each
    monitored()

    def replayed() -> int:
        n: int = hf["replay"](first)
        return n

    hf_sampled: Any = hf["sampled"]
    # --no-eos: every row runs max_new_tokens on both sides (HF: EOS masked), so there is nothing to replay
    hf_runs = {"sampled": hf_sampled} if args.no_eos else {"sampled": hf_sampled, "replayed": replayed}
    for f in hf_runs.values():
        f()
    hf_tokens: dict[str, list[int]] = {k: [] for k in hf_runs}  # per run: sampled runs differ
    t_plain: list[float] = []
    t_mon: list[float] = []
    t_hf: dict[str, list[float]] = {k: [] for k in hf_runs}
    cpu: dict[str, list[float]] = {k: [] for k in ("plain", "monitored", *hf_runs)}
    ref: list[Generation] = []
    mon: list[Generation] = []
    for r in range(args.repeats):
        t, c, ref = cpu_timed(plain)
        t_plain.append(t)
        cpu["plain"].append(c)
        t, c, mon = cpu_timed(monitored)
        t_mon.append(t)
        cpu["monitored"].append(c)
        for k, f in hf_runs.items():
            t, c, n = cpu_timed(f)
            hf_tokens[k].append(n)
            t_hf[k].append(t)
            cpu[k].append(c)
        hf_times = ", ".join(f"{k} {t_hf[k][-1]:.3f} s" for k in hf_runs)
        print(
            f"  repeat {r + 1}/{args.repeats}: plain {t_plain[-1]:.3f} s, monitored {t_mon[-1]:.3f} s, "
            f"HF generate {hf_times}"
        )
    t_ws = statistics.median(timed(lambda: word_starts(model.tokenizer))[0] for _ in range(3))
    rollbacks = sum(len(g.rollbacks) for g in mon)
    fired = [i for i, g in enumerate(mon) if g.rollbacks]
    same = [g.tokens == h.tokens for g, h in zip(ref, mon)]
    mismatch_no_rollback = [i for i, ok in enumerate(same) if not ok and i not in fired]
    max_score = max((max(g.scores, default=0.0) for g in mon), default=0.0)
    med_p, med_m = statistics.median(t_plain), statistics.median(t_mon)
    n_tok = token_count(ref)
    out: dict[str, Any] = {
        "plain_s": t_plain,
        "monitored_s": t_mon,
        "median_plain_s": med_p,
        "median_monitored_s": med_m,
        "ratio": med_m / med_p,
        "target_ratio": 1.10,
        "generated_tokens": n_tok,
        "tokens_per_s_plain": n_tok / med_p,
        "tokens_per_s_monitored": token_count(mon) / med_m,
        "rollbacks": rollbacks,
        "sequences_with_rollbacks": fired,
        "same_tokens": all(same),
        "max_score": max_score,
        "forward_tokens_plain": sum(g.forward_tokens for g in ref),
        "forward_tokens_monitored": sum(g.forward_tokens for g in mon),
        "word_starts_table_s": t_ws,
    }
    for k in hf_runs:
        med = statistics.median(t_hf[k])
        out[f"hf_{k}_s"], out[f"median_hf_{k}_s"], out[f"hf_{k}_tokens"] = t_hf[k], med, hf_tokens[k]
        # per run (the sampled runs generate different numbers of tokens), then the median
        hf_rates = [n / t for n, t in zip(hf_tokens[k], t_hf[k])]
        hf_cpu_rates = [n / c for n, c in zip(hf_tokens[k], cpu[k])]
        out[f"tokens_per_s_hf_{k}"] = statistics.median(hf_rates)
        for mine, runs, n in (("plain", t_plain, n_tok), ("monitored", t_mon, token_count(mon))):
            out[f"{mine}_vs_hf_{k}"] = out[f"tokens_per_s_{mine}"] / out[f"tokens_per_s_hf_{k}"]
            # best of the repeats on each side: on a shared machine, the run least slowed down by others
            out[f"best_{mine}_vs_hf_{k}"] = (n / min(runs)) / max(hf_rates)
            # CPU seconds of this process (one torch thread): time other work held the cores is left out
            mine_cpu = statistics.median(n / c for c in cpu[mine])
            out[f"cpu_{mine}_vs_hf_{k}"] = mine_cpu / statistics.median(hf_cpu_rates)
    out["cpu_s"] = cpu
    print(f"\n{'':14s}{'median s':>10s}{'tokens/s':>10s}   runs (s)")
    print(f"{'plain':14s}{med_p:10.3f}{out['tokens_per_s_plain']:10.1f}   {[round(t, 3) for t in t_plain]}")
    print(
        f"{'monitored':14s}{med_m:10.3f}{out['tokens_per_s_monitored']:10.1f}   {[round(t, 3) for t in t_mon]}"
    )
    ratio = med_m / med_p
    verdict = "OK" if ratio <= 1.10 else "ABOVE TARGET"
    print(f"ratio monitored / plain = {ratio:.3f} (target <= 1.10: {verdict})")
    print(
        f"generated tokens: {n_tok}; positions run through the model: plain {out['forward_tokens_plain']}, "
        f"monitored {out['forward_tokens_monitored']} (monitored also feeds each sequence's last token)"
    )
    print(
        f"of the monitored overhead ({med_m - med_p:+.3f} s): building the word-start table once per call "
        f"(interventions.sampling.word_starts) takes {t_ws:.3f} s on its own"
    )
    print(f"rollbacks in the monitored runs: {rollbacks} (max probe score {max_score:.3g})")
    if rollbacks:
        print(
            f"  NOTE: the probe fired on sequences {fired}: their tokens differ from the plain run by design"
        )
    print(f"same tokens as plain generation: {'yes' if all(same) else 'NO'}")
    if mismatch_no_rollback:
        raise SystemExit(
            f"sequences {mismatch_no_rollback} had no rollback but differ from plain generation: "
            "the monitor changed the output"
        )
    return out


def hf_generator(args: argparse.Namespace, model: LensModel, prompts: list[str]) -> Any:
    """A function that runs Hugging Face ``model.generate`` on the same module, prompts, batch size and
    sampling (temperature 1, no top-k / top-p), left-padded, stopping at EOS, and returns the number of
    tokens generated (each row's tokens before its EOS). Checks first that greedy HF generation draws the
    same tokens as greedy toxlens generation (the cache really is used)."""
    import copy

    hf = model.bridge.original_model
    tok = copy.deepcopy(model.tokenizer)
    tok.padding_side = "left"
    eos = tok.eos_token_id
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token

    def batches(n_new: int, forced: Tensor | None = None, **kw: Any) -> list[list[int]]:
        rows: list[list[int]] = []
        for start in range(0, len(prompts), args.batch_size):
            enc = tok(prompts[start : start + args.batch_size], return_tensors="pt", padding=True)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            width = enc["input_ids"].shape[1]
            if forced is not None:
                kw["logits_processor"] = [Replay(forced[start : start + args.batch_size], width)]
            with torch.no_grad(), shimmed(model.blocks):
                out = hf.generate(
                    **enc, max_new_tokens=n_new, pad_token_id=tok.pad_token_id, eos_token_id=eos, **kw
                )
            rows.extend(out[:, enc["input_ids"].shape[1] :].tolist())
        return rows

    mine = generate(model, prompts, 8, sampling=Sampling(greedy=True), batch_size=args.batch_size)
    theirs = batches(8, do_sample=False)
    same = [g.tokens == (row[: row.index(eos)] if eos in row else row) for g, row in zip(mine, theirs)]
    print(
        f"greedy HF generate draws the same tokens as greedy toxlens generate: {sum(same)}/{len(same)} rows"
    )
    if not all(same):
        raise SystemExit("HF generate and toxlens disagree on greedy tokens: the comparison would be unfair")

    def count(rows: list[list[int]]) -> int:
        return sum(row.index(eos) if eos in row else len(row) for row in rows)

    sample: dict[str, Any] = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)

    if args.no_eos:  # every row generates max_new_tokens tokens, as toxlens does with stop_at_eos=False
        sample["min_new_tokens"] = args.max_new_tokens

    def sampled() -> int:
        return count(batches(args.max_new_tokens, **sample))

    def replay(gens: list[Generation]) -> int:
        n_new = args.max_new_tokens
        forced = torch.full((len(gens), n_new), eos, dtype=torch.long)
        for i, g in enumerate(gens):
            forced[i, : len(g.tokens)] = torch.tensor(g.tokens, dtype=torch.long)
        rows = batches(n_new, forced, **sample)
        got = [row[: row.index(eos)] if eos in row else row for row in rows]
        if got != [g.tokens for g in gens]:
            raise SystemExit("HF generate did not replay toxlens's tokens")
        return count(rows)

    return {"sampled": sampled, "replay": replay}


class Replay(LogitsProcessor):
    """Forces ``forced[row, t]`` as the ``t``-th new token of a batch whose prompts are ``width`` tokens
    wide (every other token gets -inf): HF generate then draws exactly these tokens."""

    def __init__(self, forced: Tensor, width: int) -> None:
        self.forced, self.width = forced, width

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        t = input_ids.shape[1] - self.width
        out = torch.full_like(scores, -math.inf)
        return out.scatter_(1, self.forced[:, t : t + 1].to(scores.device), 0.0)


def forced_rollbacks(
    args: argparse.Namespace, model: LensModel, probe: Probe, prompt: str
) -> list[dict[str, Any]]:
    sampling = Sampling(temperature=1.0)
    starts = word_starts(model.tokenizer)
    n_max = args.max_new_tokens

    def run(p: Probe, steer_scale: float) -> Generation:
        policy = RollbackPolicy(safe_threshold=SAFE_THRESHOLD, steer_scale=steer_scale)
        return generate(
            model,
            [prompt],
            n_max,
            seed=args.seed,
            sampling=sampling,
            monitor=p,
            threshold=THRESHOLD,
            policy=policy,
            stop_at_eos=False,  # fixed lengths: the forward_tokens difference is the rollback's cost only
        )[0]

    base = run(probe, 0.0)
    if base.rollbacks:
        raise SystemExit("the reference probe fired on the rollback prompt; pass a probe that does not fire")
    baselines = {0.0: base, CORRECTIVE_SCALE: run(probe, CORRECTIVE_SCALE)}  # no rollback: same tokens
    rows: list[dict[str, Any]] = []
    for n in ROLLBACK_NS:
        # safe point j: generated token j starts a word (the kept text is tokens[:j]); j = 0 (the end of
        # the prompt) is always a safe point. Prefer a word start inside the text.
        if n > n_max:
            print(f"  n={n}: skipped (max_new_tokens={n_max} < n)")
            continue
        cands = [j for j in range(1, n_max - n + 1) if bool(starts[base.tokens[j]])]
        j = cands[0] if cands else 0
        at = j + n - 1
        schedule = {i: MID_SCORE for i in range(j, at)}
        schedule[at] = 1.0
        for scale in (0.0, CORRECTIVE_SCALE):
            baseline = baselines[scale]
            g = run(ScriptedProbe(probe, schedule, THRESHOLD), scale)
            ev = g.rollbacks[0] if g.rollbacks else None
            extra = g.forward_tokens - baseline.forward_tokens
            expected = n + (1 if scale > 0 else 0)
            rows.append(
                {
                    "n_planned": n,
                    "steer_scale": scale,
                    "safe_point": j,
                    "fired_at": at,
                    "rollbacks": [vars(e) for e in g.rollbacks],
                    "discarded": ev.discarded if ev else 0,
                    "recomputed": g.recomputed,
                    "forward_tokens": g.forward_tokens,
                    "forward_tokens_no_rollback": baseline.forward_tokens,
                    "extra_forward_tokens": extra,
                    "expected_extra": expected,
                    "ok": ev is not None and ev.discarded == n and extra == expected == g.recomputed,
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--probe", default=None, help="a saved probe directory (probe.json + probe.safetensors)")
    ap.add_argument(
        "--prompts", type=int, default=8, help=f"how many built-in prompts (at most {len(PROMPTS)})"
    )
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=None, help="write every number as JSON here")
    ap.add_argument(
        "--no-eos",
        action="store_true",
        help="every row generates --max-new-tokens on both sides (toxlens: stop_at_eos=False; HF: EOS masked "
        "by min_new_tokens), so the tokens/s compare equal work under each side's own sampling",
    )
    args = ap.parse_args()
    if not 1 <= args.prompts <= len(PROMPTS):
        ap.error(f"--prompts must be in [1, {len(PROMPTS)}]")
    if args.repeats < 1 or args.max_new_tokens < 1:
        ap.error("--repeats and --max-new-tokens must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = load_model(args.model, args.device)
    load_s = time.perf_counter() - t0
    if args.probe:
        probe = Probe.load(args.probe)
        probe_desc = f"probe from {args.probe} (layer {probe.layer}, {probe.hook})"
    else:
        probe = silent_probe(model, args.seed)
        probe_desc = (
            f"no --probe: random-direction probe at the middle layer {probe.layer} ({probe.hook}) with bias "
            "-1e4, so it never fires"
        )
    prompts = list(PROMPTS[: args.prompts])
    print(
        f"model {args.model} ({model.info.n_layers} layers, d_model {model.info.d_model}, {model.info.device}, "
        f"torch threads {torch.get_num_threads()}), loaded in {load_s:.1f} s"
    )
    print(probe_desc)
    print(
        f"{len(prompts)} prompts x {args.max_new_tokens} new tokens, batch size {args.batch_size}, seed "
        f"{args.seed}, Sampling(temperature=1.0); threshold {THRESHOLD}, RollbackPolicy(safe_threshold="
        f"{SAFE_THRESHOLD}); {args.repeats} repeat(s), interleaved, after one warm-up of each\n"
    )
    print("== 1. monitored (no rollback firing) vs plain generation ==")
    over = overhead(args, model, probe, prompts, hf_generator(args, model, prompts))
    runs = (("sampled", "its own draws"), ("replayed", "toxlens's plain tokens, the same work"))
    for k, what in runs[:1] if args.no_eos else runs:
        print(
            f"Hugging Face generate, {k} ({what}): median {over[f'median_hf_{k}_s']:.3f} s, "
            f"{over[f'tokens_per_s_hf_{k}']:.1f} tokens/s (tokens per run {over[f'hf_{k}_tokens']}); toxlens relative "
            f"to it: plain {over[f'plain_vs_hf_{k}']:.2f}x (target >= 0.9), monitored "
            f"{over[f'monitored_vs_hf_{k}']:.2f}x (target >= 0.85); best of {args.repeats} runs on each side: "
            f"plain {over[f'best_plain_vs_hf_{k}']:.2f}x, monitored {over[f'best_monitored_vs_hf_{k}']:.2f}x; "
            f"from median CPU seconds: plain {over[f'cpu_plain_vs_hf_{k}']:.2f}x, monitored "
            f"{over[f'cpu_monitored_vs_hf_{k}']:.2f}x"
        )

    print(f"\n== 2. forced rollbacks on {prompts[0]!r} (one sequence, {args.max_new_tokens} new tokens) ==")
    rows = forced_rollbacks(args, model, probe, prompts[0])
    hdr = (
        f"{'n':>3s} {'steer':>6s} {'safe pt':>7s} {'fired':>5s} {'discarded':>9s} {'recomputed':>10s} "
        f"{'fwd tokens':>10s} {'no-rollback':>11s} {'extra':>5s} {'expected':>8s}  check"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r['n_planned']:3d} {r['steer_scale']:6g} {r['safe_point']:7d} {r['fired_at']:5d} "
            f"{r['discarded']:9d} {r['recomputed']:10d} {r['forward_tokens']:10d} "
            f"{r['forward_tokens_no_rollback']:11d} {r['extra_forward_tokens']:5d} {r['expected_extra']:8d}  "
            f"{'OK' if r['ok'] else 'MISMATCH'}"
        )
    print(
        "safe pt = generated tokens kept (0: back to the end of the prompt); fired = generated index whose score "
        "reached the threshold;\nextra = forward_tokens - forward_tokens of the same call without a rollback. "
        f"steer 0: the safe point's stored logits are reused, so a rollback of n tokens recomputes exactly n "
        f"positions;\nsteer {CORRECTIVE_SCALE:g} (corrective steering, policy.steer_scale): the safe-point "
        "token is fed again with -scale x probe direction added, so n + 1."
    )
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": args.model,
            "device": str(model.info.device),
            "torch_threads": torch.get_num_threads(),
            "probe": probe_desc,
            "prompts": prompts,
            "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "repeats": args.repeats,
            "threshold": THRESHOLD,
            "safe_threshold": SAFE_THRESHOLD,
            "overhead": over,
            "forced_rollbacks": rows,
        }
        out.write_text(json.dumps(payload, indent=2))
        print(f"wrote {out}")
    if not all(r["ok"] for r in rows):
        raise SystemExit("a forced rollback did not cost what was expected (see MISMATCH rows)")


if __name__ == "__main__":
    main()
