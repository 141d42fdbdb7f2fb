"""scripts/length_matched.py: baseline samples cut to the monitored lengths, scored, by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lens.errors import ToxlensError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from length_matched import length_matched, read_samples  # noqa: E402


def rows(cond: str, lengths: list[list[int]]) -> list[dict]:
    # prompt p, sample s: tokens 0..4 except token 3 is a "9" (the flagged word) in sample 0 of every prompt
    out = []
    for p, per in enumerate(lengths):
        for s, n in enumerate(per):
            toks = [0, 1, 2, 9 if s == 0 else 3, 4][:n]
            out.append(
                {"condition": cond, "prompt_index": p, "sample_index": s, "tokens": toks, "n_tokens": n}
            )
    return out


def as_map(rs: list[dict]) -> dict:
    return {(r["prompt_index"], r["sample_index"]): r for r in rs}


def flagged(texts: list[str]) -> list[float]:
    return [1.0 if "9" in t.split() else 0.0 for t in texts]


def test_cut_to_monitored_lengths_by_hand() -> None:
    base = as_map(rows("none", [[5, 5], [5, 5], [5, 5]]))  # every prompt's sample 0 holds the flagged token
    mon = as_map(
        rows("rollback", [[3, 5], [4, 5], [2, 1]])
    )  # prompt 1 keeps token 3, prompts 0 and 2 stop before
    out = length_matched(mon, base, lambda ids: " ".join(map(str, ids)), {"flag": flagged})
    assert out["n_samples"] == 6
    assert out["mean_tokens_monitored"] == pytest.approx((3 + 5 + 4 + 5 + 2 + 1) / 6)
    assert out["mean_tokens_baseline"] == 5
    flag = out["scorers"]["flag"]
    assert flag["toxic_samples"] == 1 and flag["toxicity_probability"] == pytest.approx(1 / 3)


def test_mismatched_runs_and_bad_dirs_raise(tmp_path: Path) -> None:
    base = as_map(rows("none", [[5, 5]]))
    mon = as_map(rows("rollback", [[5, 5], [5, 5]]))
    with pytest.raises(ToxlensError, match="different samples"):
        length_matched(mon, base, str, {"flag": flagged})
    with pytest.raises(ToxlensError, match=r"no samples\.jsonl"):
        read_samples(str(tmp_path), "none")
    (tmp_path / "samples.jsonl").write_text(json.dumps(rows("none", [[1]])[0]) + "\n")
    with pytest.raises(ToxlensError, match="no samples of condition 'rollback'"):
        read_samples(str(tmp_path), "rollback")


def test_script_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "o.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "length_matched.py"), "--model", "unused"]
    done = subprocess.run(
        [*cmd, "--monitored", str(tmp_path), "--baseline", str(tmp_path), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    lines = done.stderr.strip().splitlines()
    assert (
        done.returncode == 2
        and lines[-1].startswith("length_matched: error: ")
        and "samples.jsonl" in lines[-1]
    )
    assert not out.exists()
    done = subprocess.run(
        [*cmd, "--monitored", str(tmp_path), "--baseline", str(tmp_path), "--scorer", "nope"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "unknown scorer" in done.stderr
