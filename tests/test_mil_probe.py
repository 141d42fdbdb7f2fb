"""The multiple-instance probe: text labels only, yet it must fire on the planted toxic token."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import BENIGN_WORDS, TOXIC_WORDS, WORDS, tiny

from lens.errors import ToxlensError
from lens.mil_probe import AGGREGATIONS, fit_mil_probe, positions, text_log_probs, train_mil_probe
from lens.model import LensModel
from lens.probe import Probe
from lens.token_probe import collect_token_residuals

FILLER = [w for w in WORDS if w not in TOXIC_WORDS + BENIGN_WORDS]


def dataset(n: int = 80, seed: int = 0) -> tuple[list[str], list[int]]:
    """Filler sentences; odd texts hold one toxic marker word, even ones one benign marker word."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        words = rng.sample(FILLER, rng.randint(3, 7))
        words.insert(rng.randrange(len(words) + 1), rng.choice(TOXIC_WORDS if i % 2 else BENIGN_WORDS))
        texts.append(" ".join(words))
        labels.append(i % 2)
    return texts, labels


@pytest.fixture()
def model(tmp_path: Path) -> LensModel:
    return tiny("llama", tmp_path)[0]


def test_positions_and_aggregations_by_hand() -> None:
    index = torch.tensor([0, 0, 0, 1, 2, 2])
    assert positions(index).tolist() == [0, 1, 2, 0, 0, 1]
    z = torch.tensor([-1.0, 2.0, 0.5, -3.0, 0.0, 1.0])
    log_pos, log_neg = text_log_probs(z, index, 3, "max")
    torch.testing.assert_close(log_pos.exp(), torch.sigmoid(torch.tensor([2.0, -3.0, 1.0])))
    torch.testing.assert_close(log_pos.exp() + log_neg.exp(), torch.ones(3))
    lp, _ = text_log_probs(z, index, 3, "logsumexp", lse_r=2.0)
    s = torch.stack([torch.logsumexp(2 * z[:3], 0), 2 * z[3], torch.logsumexp(2 * z[4:], 0)]) / 2
    torch.testing.assert_close(lp.exp(), torch.sigmoid(s))
    lp, ln = text_log_probs(z, index, 3, "noisy-or")
    q = 1 - torch.sigmoid(z)
    expected = 1 - torch.stack([q[:3].prod(), q[3], q[4:].prod()])
    torch.testing.assert_close(lp.exp(), expected)
    torch.testing.assert_close(ln.exp(), 1 - expected)
    with pytest.raises(ToxlensError, match="aggregation"):
        text_log_probs(z, index, 3, "mean")


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_mil_probe_fires_on_the_planted_token_only(
    model: LensModel, tmp_path: Path, aggregation: str
) -> None:
    texts, labels = dataset()
    probe = train_mil_probe(
        model, texts, labels, layer=0, hook="resid_pre", aggregation=aggregation, steps=200, seed=1
    )
    meta = probe.metadata
    assert probe.pooling == "max" and meta["aggregation"] == aggregation and meta["monitor"] is True
    assert "text-level only" in meta["labels"] and meta["steps"] == 200 and meta["C"] == 1.0
    assert meta["auc"] > 0.95
    # per token: every toxic marker outscores every other token, benign markers included
    ids = [model.tokenize(t) for t in texts]
    feats, _ = collect_token_residuals(model, ids, 0, "resid_pre")
    words = [w for t in texts for w in t.split()]  # word-level tokenizer: one token per word
    assert len(words) == len(feats)
    s = probe.score(feats)
    toxic = torch.tensor([w in TOXIC_WORDS for w in words])
    assert float(s[toxic].min()) > float(s[~toxic].max())
    if aggregation == "max":  # its token scores are text probabilities: one threshold separates them
        assert float(s[toxic].min()) > 0.5 > float(s[~toxic].max())
    ev = meta["token_eval"]
    k = ev["thresholds"].index(0.5)
    if aggregation == "max":
        assert ev["token_fire_rate_nontoxic_texts"][k] == 0.0 and ev["text_recall"][k] == 1.0
    probe.save(tmp_path / "p")
    again = Probe.load(tmp_path / "p")
    assert again.pooling == "max" and again.is_monitor and again.metadata == probe.metadata
    torch.testing.assert_close(again.score(feats), s)


def test_mil_beats_text_labelled_tokens_on_filler(model: LensModel) -> None:
    """A text-labelled token probe learns "this is a toxic text" and must give ambiguous filler tokens
    about the base rate; the MIL probe puts filler low (the property the monitor needs)."""
    texts, labels = dataset()
    ids = [model.tokenize(t) for t in texts]
    feats, index = collect_token_residuals(model, ids, 0, "resid_pre")
    y = torch.tensor(labels)
    mil = fit_mil_probe(feats, index, y, 0, "resid_pre", steps=200)
    words = [w for t in texts for w in t.split()]
    filler = torch.tensor([w in FILLER for w in words])
    assert float(mil.score(feats)[filler].max()) < 0.5


def test_deterministic_and_seeded(model: LensModel) -> None:
    texts, labels = dataset(40)
    a = train_mil_probe(model, texts, labels, 1, steps=30, seed=3)
    b = train_mil_probe(model, texts, labels, 1, steps=30, seed=3)
    assert torch.equal(a.weight, b.weight) and a.bias == b.bias
    c = train_mil_probe(model, texts, labels, 1, steps=30, seed=4)
    assert not torch.equal(a.weight, c.weight)  # another split


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"aggregation": "mean"}, "aggregation"),
        ({"C": 0.0}, "C must be"),
        ({"steps": 0}, "steps"),
        ({"lr": float("nan")}, "lr"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"test_fraction": 1.0}, "test_fraction"),
    ],
)
def test_validation(model: LensModel, kwargs: dict[str, Any], needle: str) -> None:
    texts, labels = dataset(20)
    with pytest.raises(ToxlensError, match=needle):
        train_mil_probe(model, texts, labels, 0, **kwargs)
    with pytest.raises(ToxlensError, match="at least 2"):
        train_mil_probe(model, texts, [1] * 19 + [0], 0)
