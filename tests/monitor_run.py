"""A tiny seeded Llama, a token monitor trained on it through the CLI, and a fake `toxlens evaluate` run of
10 samples × 6 generated tokens: what the monitor-calibration scripts read."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from tiny import TOXIC_WORDS, WORDS, hf_model, make_tokenizer


def monitor_and_run(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``(model_dir, probe_dir, run_dir)``; the probe reads layer 1's residual stream."""
    from toxlens.cli import main as toxlens_main

    d = tmp_path / "model"
    make_tokenizer(d)
    hf_model("llama", seed=1).save_pretrained(str(d))
    filler = [w for w in WORDS if w not in TOXIC_WORDS][:20]
    data = tmp_path / "data.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(40):
            words = [filler[(i + k) % 20] for k in range(4)] + ([TOXIC_WORDS[i % 2]] if i % 2 else [])
            w.writerow([" ".join(words), i % 2])
    probe_dir = tmp_path / "probe"
    common = [
        "probe",
        "train",
        "--model",
        str(d),
        "--data",
        str(data),
        "--positive-labels",
        "1",
        "--layer",
        "1",
    ]
    assert toxlens_main([*common, "--pooling", "token", "--out", str(probe_dir)]) == 0
    run = tmp_path / "run"
    run.mkdir()
    gen = torch.Generator().manual_seed(0)
    rows = [
        {
            "condition": "none",
            "prompt_index": i,
            "sample_index": 0,
            "prompt": " ".join(filler[i : i + 3]),
            "tokens": torch.randint(5, 40, (6,), generator=gen).tolist(),
        }
        for i in range(10)
    ]
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d, probe_dir, run
