"""scripts/match_threshold.py: the threshold rule by hand, and thresholds that fire on the asked share of the
generated tokens, with the monitor's scores recomputed from the raw Hugging Face model's hidden states."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monitor_run import monitor_and_run

from lens.errors import ToxlensError
from lens.probe_core import Probe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from match_threshold import matched_threshold  # noqa: E402


def test_matched_threshold_by_hand() -> None:
    s = torch.tensor([0.9, 0.1, 0.5, 0.7, 0.3, 0.2, 0.8, 0.4, 0.6, 0.05])
    assert matched_threshold(s, 0.3) == pytest.approx(0.7)  # 3 of 10 fire: 0.9, 0.8, 0.7
    assert matched_threshold(s, 0.25) == pytest.approx(0.7)  # ceil(2.5) = 3
    assert matched_threshold(s, 0.01) == pytest.approx(0.9)  # at least one fires
    for share in (0.0, 1.0, -0.1):
        with pytest.raises(ToxlensError, match="strictly between 0 and 1"):
            matched_threshold(s, share)
    with pytest.raises(ToxlensError, match="no generated tokens"):
        matched_threshold(torch.zeros(0), 0.5)


def _raw_scores(model_dir: Path, probe: Probe, run: Path) -> torch.Tensor:
    """The monitor's score of every generated token, from the HF model's own hidden states (layer 1's output
    is ``hidden_states[2]``; the tiny model has more than two layers, so no final norm is involved)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    hf = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    assert hf.config.num_hidden_layers > 2 and probe.layer == 1 and probe.hook == "resid_post"
    out = []
    for line in (run / "samples.jsonl").read_text().splitlines():
        r = json.loads(line)
        prompt = tok(r["prompt"])["input_ids"]
        ids = torch.tensor([prompt + r["tokens"]])
        with torch.no_grad():
            h = hf(input_ids=ids, output_hidden_states=True).hidden_states[2][0]
        out.append(probe.score(h[len(prompt) :]))
    return torch.cat(out)


def test_script_matches_a_share_and_a_reference(tmp_path: Path) -> None:
    d, probe_dir, run = monitor_and_run(tmp_path)
    probe = Probe.load(probe_dir)
    raw = _raw_scores(d, probe, run)
    assert raw.numel() == 60
    script = [sys.executable, str(ROOT / "scripts" / "match_threshold.py"), "--model", str(d)]
    base = ["--probe", str(probe_dir), "--calibrate", str(run)]

    out = tmp_path / "share.json"
    done = subprocess.run(
        [*script, *base, "--share", "0.25", "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    res = json.loads(out.read_text())
    k = math.ceil(0.25 * 60)
    assert res["threshold"] == pytest.approx(float(torch.sort(raw, descending=True).values[k - 1]), abs=1e-5)
    assert res["tokens"] == 60 and res["reference"] is None
    assert k / 60 <= res["firing_share"] <= k / 60 + 1 / 60 + 1e-9  # a near-tie may add one

    # the reference: the same monitor at 0.5 on the same run — the matched threshold fires on the same tokens
    out = tmp_path / "like.json"
    like = ["--like", str(probe_dir), "--like-threshold", "0.5", "--like-calibrate", str(run)]
    done = subprocess.run([*script, *base, *like, "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    res = json.loads(out.read_text())
    want = float((raw >= 0.5).float().mean())
    assert 0 < want < 1  # else the script refuses (by hand above)
    assert res["reference"]["firing_share"] == pytest.approx(want, abs=1 / 60 + 1e-9)
    assert res["threshold"] >= 0.5 - 1e-5
    assert res["firing_share"] == pytest.approx(res["reference"]["firing_share"])

    # bad input: one error, exit 2, nothing written
    for extra, needle in (
        (["--share", "0.2", "--like", str(probe_dir)], "exactly one of"),
        ([], "exactly one of"),
        (["--like", str(probe_dir), "--like-threshold", "0.5"], "--like-calibrate"),
        (["--share", "1.5"], "--share"),
        ([*like[:2], "--like-threshold", "2", *like[4:]], "--like-threshold"),
        (["--share", "0.2", "--condition", "x"], "'x'"),
    ):
        bad = tmp_path / "bad.json"
        done = subprocess.run([*script, *base, *extra, "--out", str(bad)], capture_output=True, text=True)
        assert done.returncode == 2 and needle in done.stderr, (extra, done.stderr)
        assert not bad.exists()
    bad_probe = ["--probe", str(run), "--calibrate", str(run), "--share", "0.2"]
    done = subprocess.run(
        [*script, *bad_probe, "--out", str(tmp_path / "b.json")], capture_output=True, text=True
    )
    assert done.returncode == 2 and "no saved probe" in done.stderr, done.stderr
    done = subprocess.run(
        [*script, *base, "--share", "0.2", "--out", str(tmp_path / "no" / "x.json")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "no directory" in done.stderr, done.stderr
