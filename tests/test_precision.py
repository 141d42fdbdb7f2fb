"""``--dtype bfloat16`` / ``float16`` against float32 on tiny GPT-2 and Llama.

Tolerance. bfloat16 keeps 8 significant bits (7 stored + the implicit one), so one rounding has a
relative error of at most ``u = 2**-8 ≈ 0.0039``. A logit of the 3-layer test models is the result
of N ≈ 20-60 roundings along its path (embedding; per block norm, attention, MLP, residual adds;
final norm, unembedding), of numbers of the size of the largest activation. Independent rounding
errors add like a random walk, ``sqrt(N) * u * scale`` ≈ 4.5-8 u·scale, so the test allows
``tol = 8 * u * scale`` with ``scale`` the largest float32 magnitude of the compared quantity (at
least 1): the logits for (a) and (d), the metrics ``m_toxic``/``m_benign`` for the patching and
attribution scores (b, c), which are differences of such metrics. With the test models' scales this is
≈ 0.06 on logits and ≈ 0.12 on scores (observed: ≤ 0.02 and ≤ 0.011). As that is not far below the
spread of the scores themselves, the scores must also correlate with float32's at r > 0.99.
float16 keeps 11 bits (``u = 2**-11``), the same formula gives 8× tighter bounds.
Every metric is computed in float32 whatever the model's dtype (``lens/metrics.py`` casts first).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny import TOXIC_WORDS, hf_model, make_tokenizer

from interventions import decoding
from interventions.generate import generate
from lens.loading import from_hf
from lens.metrics import LogitDiff, ToxicLogMass
from lens.model import LensModel
from lens.prompts import parse_pairs
from patching.activation import activation_patching
from patching.attribution import attribution_patching
from toxlens.cli import main

KINDS = ["gpt2", "llama"]
U = {"bfloat16": 2.0**-8, "float16": 2.0**-11}
PAIRS = [
    ("you are my idiot", "you are my friend"),
    ("he is a jerk and", "he is a pal and"),
    ("what a jerk", "what a pal"),
]
TOKENS = torch.tensor([[1, 5, 6, 7, 8, 9, 10]])


def tol(dtype: str, reference: torch.Tensor) -> float:
    return 8 * U[dtype] * max(1.0, float(reference.abs().max()))


def load(kind: str, tmp: Path, dtype: torch.dtype) -> tuple[LensModel, Any]:
    """(LensModel in ``dtype``, untouched float32 HF copy) with the same weights."""
    tok = make_tokenizer(tmp / f"tok-{kind}")
    reference = hf_model(kind, seed=1)
    return from_hf(hf_model(kind, seed=1).to(dtype), tok, f"tiny-{kind}"), reference


def setup(kind: str, tmp: Path, dtype: torch.dtype) -> tuple[LensModel, Any, Any, ToxicLogMass]:
    lm, ref = load(kind, tmp, dtype)
    pairs = parse_pairs([json.dumps({"toxic": t, "benign": b}) for t, b in PAIRS], lm)
    metric = ToxicLogMass([int(lm.tokenizer.convert_tokens_to_ids(w)) for w in TOXIC_WORDS])
    return lm, ref, pairs, metric


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("kind", KINDS)
def test_low_precision_logits_and_scores_near_float32(kind: str, dtype: str, tmp_path: Path) -> None:
    low, _, pairs_low, metric = setup(kind, tmp_path / "low", getattr(torch, dtype))
    full, ref, pairs, _ = setup(kind, tmp_path / "full", torch.float32)
    assert low.info.dtype == dtype and full.info.dtype == "float32"
    with torch.no_grad():
        want = full.bridge(TOKENS)
        got = low.bridge(TOKENS)
        # float32 path unchanged: the bridge equals the untouched Hugging Face model
        assert float((want - ref(TOKENS).logits).abs().max()) <= 1e-5
    assert got.dtype == getattr(torch, dtype)
    assert float((got.float() - want).abs().max()) <= tol(dtype, want)  # (a) final logits
    for method in (activation_patching, attribution_patching):  # (b) activation, (c) attribution
        kw = {"progress": False} if method is activation_patching else {}
        r32 = method(full, pairs, metric, "components", **kw)
        r16 = method(low, pairs_low, metric, "components", **kw)
        scale = torch.cat([r32.m_toxic, r32.m_benign])
        for a, b in ((r16.patched, r32.patched), (r16.m_toxic, r32.m_toxic), (r16.mean, r32.mean)):
            assert float((a - b).abs().max()) <= tol(dtype, scale), method.__name__
        assert float((r16.patched - r32.patched).abs().max()) > 0  # the low-precision run really ran
        corr = torch.corrcoef(torch.stack([r16.mean.flatten(), r32.mean.flatten()]))[0, 1]
        assert float(corr) > 0.99, (method.__name__, float(corr))
        assert r32.metadata["model"]["dtype"] == "float32"
        assert r16.metadata["model"]["dtype"] == dtype


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_generation_first_token_logits(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[torch.Tensor] = []
    original = decoding.Engine._forward

    def spy(self: Any, *args: Any) -> torch.Tensor:
        out: torch.Tensor = original(self, *args)
        seen.append(out.detach().clone())
        return out

    monkeypatch.setattr(decoding.Engine, "_forward", spy)
    firsts = []
    for dtype in (torch.float32, torch.bfloat16):
        lm, _ = load(kind, tmp_path / str(dtype), dtype)
        seen.clear()
        generate(lm, ["you are my"], 3, seed=0)
        firsts.append(seen[0][0])
    assert firsts[1].dtype == torch.float32  # the engine samples from float32 logits
    assert float((firsts[1] - firsts[0]).abs().max()) <= tol("bfloat16", firsts[0])  # (d)


def test_metrics_are_float32_on_bfloat16_logits(tmp_path: Path) -> None:
    logits = torch.randn(3, 59).to(torch.bfloat16)
    rows = torch.arange(3)
    assert ToxicLogMass([1, 2])(logits, rows).dtype == torch.float32
    assert LogitDiff([1, 2, 3], [4, 5, 6])(logits, rows).dtype == torch.float32
    # ... and inside a bfloat16 patching run the metric sees bfloat16 logits and returns float32
    low, _, pairs, metric = setup("llama", tmp_path, torch.bfloat16)
    dtypes: list[tuple[torch.dtype, torch.dtype]] = []

    class Spy(ToxicLogMass):
        def __call__(self, logits: torch.Tensor, pair_index: torch.Tensor) -> torch.Tensor:
            out = super().__call__(logits, pair_index)
            dtypes.append((logits.dtype, out.dtype))
            return out

    activation_patching(low, pairs, Spy(metric.ids), "components", progress=False)
    assert dtypes and set(dtypes) == {(torch.bfloat16, torch.float32)}


@pytest.mark.parametrize("command", ["locate", "generate", "evaluate", "probe", "edit", "tokens", "circuit"])
def test_unknown_dtype_exits_2(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [command, "train"] if command == "probe" else [command]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--dtype", "float8"])
    assert e.value.code == 2
    assert "--dtype" in capsys.readouterr().err
