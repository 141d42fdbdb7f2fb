"""scripts/random_monitor.py: the calibration rule by hand, and a written control that fires as often as its
source on the calibration tokens."""

from __future__ import annotations

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

from random_monitor import calibrated_bias  # noqa: E402


def test_calibrated_bias_by_hand() -> None:
    z = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    b = calibrated_bias(z, 0.3, 0.5)  # 3 of 10 must fire at probability 0.5: logit >= 0 from z = 5 up
    assert b == pytest.approx(-5.0)
    assert int((torch.sigmoid(z + b) >= 0.5).sum()) == 3
    b = calibrated_bias(z, 0.25, 0.1)  # ceil(2.5) = 3 fire; logit(0.1) = -log 9
    assert b == pytest.approx(-math.log(9) - 5.0)
    for rate in (0.0, 1.0):
        with pytest.raises(ToxlensError, match="strictly between 0 and 1"):
            calibrated_bias(z, rate, 0.5)


def test_script_writes_a_calibrated_random_monitor(tmp_path: Path) -> None:
    d, probe_dir, run = monitor_and_run(tmp_path)
    script = [sys.executable, str(ROOT / "scripts" / "random_monitor.py"), "--model", str(d)]
    out = tmp_path / "random"
    args = ["--like", str(probe_dir), "--calibrate", str(run), "--threshold", "0.5", "--out", str(out)]
    done = subprocess.run([*script, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    src, ctl = Probe.load(probe_dir), Probe.load(out)
    c = ctl.metadata["control"]
    assert c["calibration_tokens"] == 60 and ctl.is_monitor
    assert (ctl.layer, ctl.hook, ctl.pooling) == (src.layer, src.hook, src.pooling)
    torch.testing.assert_close(ctl.weight.norm(), src.weight.norm())
    assert abs(float(torch.nn.functional.cosine_similarity(ctl.weight, src.weight, dim=0))) < 0.9
    assert 0 < c["source_firing_share"] < 1  # else the script refuses (tested by hand above)
    assert c["source_firing_share"] <= c["control_firing_share"] <= c["source_firing_share"] + 1 / 60 + 1e-9
    # (more only where two control logits tie at the quantile)
    # bad input: one error, exit 2, nothing written
    for extra, needle in (
        (["--like", str(probe_dir), "--calibrate", str(tmp_path), "--threshold", "0.5"], "no samples.jsonl"),
        (["--like", str(probe_dir), "--calibrate", str(run), "--threshold", "1.5"], "--threshold"),
        (["--like", str(run), "--calibrate", str(run), "--threshold", "0.5"], "no saved probe"),
        (
            ["--like", str(probe_dir), "--calibrate", str(run), "--condition", "x", "--threshold", "0.5"],
            "'x'",
        ),
    ):
        bad = tmp_path / "bad"
        done = subprocess.run([*script, *extra, "--out", str(bad)], capture_output=True, text=True)
        assert done.returncode == 2 and needle in done.stderr, (extra, done.stderr)
        assert not bad.exists()
