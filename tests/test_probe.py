"""Linear residual-stream probe: planted signal, batching invariance, persistence, data loading."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from sklearn.metrics import roc_auc_score
from tiny import BENIGN_WORDS, TOXIC_WORDS, WORDS, tiny
from torch import Tensor

from lens.errors import ToxlensError
from lens.model import LensModel
from lens.probe import Probe, collect_residuals, load_labelled, roc_auc, train_all_layers, train_probe

DAVIDSON = Path(__file__).resolve().parents[2] / "shared/data/davidson/labeled_data.csv"
# A small filler vocabulary, so that in a random 32-/48-dim model the marker is linearly visible.
FILLER = [w for w in WORDS if w not in TOXIC_WORDS + BENIGN_WORDS][:8]


def planted(n: int = 200, seed: int = 0) -> tuple[list[str], list[int]]:
    """Random filler sentences; label 1 iff a toxic marker word is planted (else a benign one)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        words = rng.choices(FILLER, k=rng.randint(3, 9))
        label = i % 2
        words.insert(rng.randint(0, len(words)), rng.choice(TOXIC_WORDS if label else BENIGN_WORDS))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


@pytest.fixture(params=["gpt2", "llama"])
def model(request: pytest.FixtureRequest, tmp_path: Path) -> LensModel:
    return tiny(request.param, tmp_path)[0]


def test_planted_marker_is_found(model: LensModel) -> None:
    texts, labels = planted()
    metrics = train_all_layers(model, texts, labels)
    assert sorted(metrics) == list(range(model.n_layers))
    best = max(metrics, key=lambda layer: metrics[layer]["auc"])
    assert metrics[best]["auc"] > 0.9
    assert metrics[best]["n_train"] + metrics[best]["n_test"] == len(texts)
    probe = train_probe(model, texts, labels, best, positive_labels=["toxic"])
    assert probe.metadata["auc"] == metrics[best]["auc"]  # same seed, same split, same fit
    assert probe.metadata["accuracy"] > 0.8
    assert probe.metadata["spec"] == model.spec and probe.metadata["positive_labels"] == ["toxic"]
    # held-out AUC checked against scikit-learn on fresh (unseen) planted texts
    fresh_texts, fresh_labels = planted(80, seed=1)
    feats = collect_residuals(model, fresh_texts, [best])[best]
    assert roc_auc_score(fresh_labels, probe.score(feats).numpy()) > 0.9


def test_features_match_reference_and_ignore_batching(tmp_path: Path) -> None:
    model, ref = tiny("llama", tmp_path)
    texts = ["the cat is red", "you are a jerk", "my friend", "one two three four", "sun moon", "a"]
    one = collect_residuals(model, texts, [0, 1], batch_size=1, pooling="mean")
    many = collect_residuals(model, texts, [0, 1], batch_size=64, pooling="mean")
    last = collect_residuals(model, texts, [1], batch_size=3, pooling="last")
    for layer in (0, 1):
        torch.testing.assert_close(one[layer], many[layer], atol=1e-5, rtol=0)
    seen: dict[int, Tensor] = {}
    handles = [
        ref.model.layers[i].register_forward_hook(
            lambda _m, _a, out, i=i: seen.__setitem__(i, out[0] if isinstance(out, tuple) else out)
        )
        for i in (0, 1)
    ]
    try:
        for k, text in enumerate(texts):
            with torch.no_grad():
                ref(torch.tensor([model.tokenize(text)]))
            for layer in (0, 1):
                torch.testing.assert_close(one[layer][k], seen[layer][0].mean(0), atol=1e-4, rtol=0)
            torch.testing.assert_close(last[1][k], seen[1][0, -1], atol=1e-4, rtol=0)
    finally:
        for h in handles:
            h.remove()


def test_roc_auc_matches_sklearn() -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (200,), generator=gen)
    scores = torch.randint(0, 10, (200,), generator=gen).float() + y  # many ties
    assert roc_auc(scores, y) == pytest.approx(roc_auc_score(y.numpy(), scores.numpy()), abs=1e-12)


def test_direction_score_and_round_trip(model: LensModel, tmp_path: Path) -> None:
    texts, labels = planted(80)
    probe = train_probe(model, texts, labels, 0)
    d = probe.direction
    assert d.shape == (model.info.d_model,) and torch.isclose(d.norm(), torch.tensor(1.0))
    noise = torch.randn(2, 5, model.info.d_model, generator=torch.Generator().manual_seed(0))
    x = probe.mean + 0.05 * probe.std * noise  # near the training distribution
    s = probe.score(x)
    assert s.shape == (2, 5) and ((s > 0) & (s < 1)).all()
    # the logit grows along `direction` at rate |w / std| and is unchanged orthogonally to it
    rate = (probe.weight / probe.std).norm()
    torch.testing.assert_close(probe.logit(x + 0.5 * d) - probe.logit(x), (0.5 * rate).expand(2, 5))
    ortho = torch.randn(model.info.d_model, generator=torch.Generator().manual_seed(1))
    ortho -= (ortho @ d) * d
    torch.testing.assert_close(probe.logit(x + ortho), probe.logit(x), atol=1e-4, rtol=0)
    # by hand
    expected = torch.sigmoid(((x - probe.mean) / probe.std) @ probe.weight + probe.bias)
    torch.testing.assert_close(s, expected)

    out = probe.save(tmp_path / "probe")
    assert sorted(p.name for p in out.iterdir()) == ["probe.json", "probe.safetensors"]
    meta = json.loads((out / "probe.json").read_text())
    for key in (
        "layer",
        "hook",
        "accuracy",
        "auc",
        "data_hash",
        "spec",
        "n_train",
        "n_test",
        "positive_labels",
    ):
        assert key in meta
    loaded = Probe.load(out)
    assert torch.equal(loaded.score(x), s)
    assert torch.equal(loaded.direction, d)
    assert loaded.metadata == probe.metadata and loaded.layer == 0 and loaded.hook == "resid_post"


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"hook": "bogus"}, "hook"),
        ({"pooling": "max"}, "pooling"),
        ({"layers": [99]}, "layers"),
        ({"texts": []}, "at least one text"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_collect_residuals_validates(model: LensModel, kwargs: dict[str, Any], needle: str) -> None:
    args: dict[str, Any] = {"texts": ["the cat"], "layers": [0], **kwargs}
    with pytest.raises(ToxlensError, match=needle):
        collect_residuals(model, **args)


def test_train_probe_validates(model: LensModel, tmp_path: Path) -> None:
    with pytest.raises(ToxlensError, match="labels"):
        train_probe(model, ["a", "b"], [1], 0)
    with pytest.raises(ToxlensError, match="0 or 1"):
        train_probe(model, ["a", "b", "c", "d"], [0, 1, 2, 0], 0)
    with pytest.raises(ToxlensError, match="each class"):
        train_probe(model, ["a", "b", "c", "d"], [0, 0, 0, 1], 0)
    with pytest.raises(ToxlensError, match="no saved probe"):
        Probe.load(tmp_path)


def test_load_labelled_csv_and_jsonl(tmp_path: Path) -> None:
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('id,text,label\n1,"hello\nthere",tox\n2,nice cat,ok\n3,bad dog,tox\n')
    assert load_labelled(csv_path, "text", "label", ["tox"]) == (
        ["hello\nthere", "nice cat", "bad dog"],
        [1, 0, 1],
    )
    assert load_labelled(csv_path, "text", "label", ["tox"], limit=2)[1] == [1, 0]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"t": "a", "y": 1}\n\n{"t": "b", "y": 0}\n')
    assert load_labelled(jsonl, "t", "y", [1], negative_labels=[0]) == (["a", "b"], [1, 0])

    bad_cases = [
        ("b.jsonl", '{"t": "a", "y": 1}\n{"t": "b", "y": \n', ":2:"),
        ("c.jsonl", '{"t": "a", "y": 1}\n[1, 2]\n', ":2:"),
        ("d.jsonl", '{"t": "a", "y": 1}\n{"t": "b"}\n', ":2: missing column"),
        ("e.jsonl", '{"t": "a", "y": 1}\n{"t": "", "y": 1}\n', ":2:"),
        ("f.jsonl", '{"t": "a", "y": 1}\n{"t": "b", "y": 7}\n', ":2: label '7'"),
        ("g.csv", 'text,label\n"multi\nline",1\nx,1,extra\n', ":4:"),
        ("h.csv", "text,label\nonly-text\n", ":2: missing column"),
    ]
    for name, content, needle in bad_cases:
        p = tmp_path / name
        p.write_text(content)
        with pytest.raises(ToxlensError, match=needle):
            load_labelled(
                p,
                "t" if name.endswith("jsonl") else "text",
                "y" if name.endswith("jsonl") else "label",
                ["1"],
                negative_labels=["0"],
            )
    with pytest.raises(ToxlensError, match="does not exist"):
        load_labelled(tmp_path / "missing.csv", "text", "label", ["1"])


@pytest.mark.skipif(not DAVIDSON.is_file(), reason=f"{DAVIDSON} not present")
def test_davidson_plumbing(tmp_path: Path) -> None:
    texts, labels = load_labelled(DAVIDSON, "tweet", "class", ["0", "1"], negative_labels=["2"], limit=300)
    assert len(texts) == 300 and set(labels) == {0, 1}
    model = tiny("gpt2", tmp_path)[0]
    probe = train_probe(model, texts, labels, 1, positive_labels=["0", "1"])
    meta = probe.metadata
    assert meta["n_train"] + meta["n_test"] == 300 and 0.0 <= meta["auc"] <= 1.0
    assert meta["positive_labels"] == ["0", "1"] and len(meta["data_hash"]) == 64
    loaded = Probe.load(probe.save(tmp_path / "davidson-probe"))
    torch.testing.assert_close(loaded.direction, probe.direction, atol=0, rtol=0)
