"""Token-level probes: features against raw HF hidden states, lexicon and word-list labels by hand, split by
text."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import BENIGN_WORDS, TOXIC_WORDS, WORDS, tiny

from lens.errors import ToxlensError
from lens.model import LensModel
from lens.probe import Probe
from lens.token_probe import (
    collect_token_residuals,
    lexicon_token_labels,
    train_token_probe,
    word_list_token_labels,
)

FILLER = [w for w in WORDS if w not in TOXIC_WORDS + BENIGN_WORDS]


def dataset(n: int = 60, seed: int = 0) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        words = rng.sample(FILLER, rng.randint(3, 6))
        marker = rng.choice(TOXIC_WORDS if i % 2 else BENIGN_WORDS)
        words.insert(rng.randrange(len(words) + 1), marker)
        texts.append(" ".join(words))
        labels.append(i % 2)
    return texts, labels


@pytest.fixture()
def model(tmp_path: Path) -> tuple[LensModel, Any]:
    return tiny("llama", tmp_path)


def test_token_residuals_match_hf_hidden_states(model: tuple[LensModel, Any]) -> None:
    m, ref = model
    texts = ["you are a red cat", "the dog", "my car is blue and very green", "the sun"]
    ids = [m.tokenize(t) for t in texts]
    feats, index = collect_token_residuals(m, ids, layer=1, batch_size=2)
    assert index.tolist() == [i for i, row in enumerate(ids) for _ in row]
    rows = []
    for row in ids:
        out = ref(torch.tensor([row]), output_hidden_states=True)
        rows.append(out.hidden_states[2][0])  # hidden_states[l + 1] = output of layer l
    torch.testing.assert_close(feats, torch.cat(rows), atol=1e-5, rtol=1e-5)


def test_lexicon_labels_mark_the_profane_word(model: tuple[LensModel, Any]) -> None:
    m, _ = model
    texts = ["you are a shit and a cat", "the cat is red"]
    ids = [m.tokenize(t) for t in texts]
    labels = lexicon_token_labels(m, texts, ids)
    assert labels == [[0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0]]
    with_bos = [m.tokenize(t, prepend_bos=True) for t in texts]
    assert lexicon_token_labels(m, texts, with_bos) == [[0, *labels[0]], [0, *labels[1]]]


def test_word_list_labels_mark_every_token_of_a_listed_word(model: tuple[LensModel, Any]) -> None:
    m, _ = model
    texts = ["you are a idiot and a cat", "the Jerk, is red", "a jerky cat"]
    ids = [m.tokenize(t) for t in texts]
    assert [len(r) for r in ids] == [7, 5, 3]  # "Jerk" and "," are two tokens of one word
    labels = word_list_token_labels(m, texts, ids, ["idiot", "JERK "])
    # case and surrounding space of listed words are ignored; "jerky" is another word
    assert labels == [[0, 0, 0, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0]]
    with_bos = [m.tokenize(t, prepend_bos=True) for t in texts]
    assert word_list_token_labels(m, texts, with_bos, ["idiot", "jerk"]) == [[0, *row] for row in labels]
    with pytest.raises(ToxlensError, match="non-empty word list"):
        word_list_token_labels(m, texts, ids, [" "])
    with pytest.raises(ToxlensError, match=r"\['f\*ck', 'two words'\] can never match"):
        word_list_token_labels(m, texts, ids, ["idiot", "two words", "f*ck"])
    assert word_list_token_labels(m, ["the cat's"], [m.tokenize("the cat's")], ["CAT'S"])[0][-1] == 1


def test_word_labelled_token_probe_finds_the_listed_markers(model: tuple[LensModel, Any]) -> None:
    m, _ = model
    texts, labels = dataset()
    probe = train_token_probe(
        m, texts, labels, layer=0, token_labels="words", hook="resid_pre", words=TOXIC_WORDS, C=10.0
    )
    meta = probe.metadata
    assert meta["token_labels"] == "words" and meta["n_token_words"] == len(TOXIC_WORDS)
    assert meta["positive_tokens"] == sum(labels)  # one marker word per toxic text, one token each
    assert meta["auc"] > 0.95  # resid_pre of layer 0 is the token embedding: the marker is linearly readable


def test_text_labelled_token_probe_separates_planted_markers(
    model: tuple[LensModel, Any], tmp_path: Path
) -> None:
    m, _ = model
    texts, labels = dataset()
    probe = train_token_probe(m, texts, labels, layer=0, token_labels="text", hook="resid_pre", C=1.0)
    meta = probe.metadata
    assert probe.pooling == "token"
    n_tokens = sum(len(m.tokenize(t)) for t in texts)
    assert meta["n_tokens"] == n_tokens == meta["n_train"] + meta["n_test"]
    assert 0 < meta["n_test"] < n_tokens
    # texts, not tokens, are split: held-out count is a sum of whole texts' lengths
    lengths = [len(m.tokenize(t)) for t in texts]
    assert any(sum(c) == meta["n_test"] for c in _subset_sums(lengths, meta["n_test"]))
    probe.save(tmp_path / "p")
    again = Probe.load(tmp_path / "p")
    assert again.pooling == "token" and again.metadata["token_labels"] == "text"
    resid = torch.randn(5, m.info.d_model)
    torch.testing.assert_close(again.score(resid), probe.score(resid))


def _subset_sums(lengths: list[int], target: int) -> list[list[int]]:
    """One witness subset of ``lengths`` summing to ``target`` (dynamic programming), or none."""
    reach: dict[int, list[int]] = {0: []}
    for n in lengths:
        for s, items in list(reach.items()):
            if s + n <= target and s + n not in reach:
                reach[s + n] = [*items, n]
    return [reach[target]] if target in reach else []


def test_errors(model: tuple[LensModel, Any]) -> None:
    m, _ = model
    texts, labels = dataset(10)
    with pytest.raises(ToxlensError, match="token_labels"):
        train_token_probe(m, texts, labels, 0, token_labels="bogus")
    with pytest.raises(ToxlensError, match="exactly when token_labels='words'"):
        train_token_probe(m, texts, labels, 0, token_labels="words")
    with pytest.raises(ToxlensError, match="exactly when token_labels='words'"):
        train_token_probe(m, texts, labels, 0, token_labels="text", words=TOXIC_WORDS)
    plain = [" ".join(FILLER[i : i + 4]) for i in range(10)]
    with pytest.raises(ToxlensError, match="positive"):
        train_token_probe(m, plain, labels, 0, token_labels="lexicon")  # no profane word anywhere
    with pytest.raises(ToxlensError, match="layer"):
        collect_token_residuals(m, [[5, 6]], layer=9)


def test_cli_token_pooling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import csv

    from tiny import hf_model, make_tokenizer

    from toxlens.cli import main

    d = tmp_path / "model"
    make_tokenizer(d)
    hf_model("llama", seed=1).save_pretrained(str(d))
    texts, labels = dataset(40)
    data = tmp_path / "data.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    common = ["probe", "train", "--model", str(d), "--data", str(data), "--positive-labels", "1"]
    out = tmp_path / "p"
    assert main([*common, "--layer", "1", "--pooling", "token", "--out", str(out)]) == 0
    probe = Probe.load(out)
    assert probe.pooling == "token" and probe.metadata["token_labels"] == "text"
    assert probe.metadata["auc"] > 0.5
    words = tmp_path / "words.txt"
    words.write_text("# from labels\nidiot  # z=1\njerk\n")
    out_w = tmp_path / "pw"
    word_flags = ["--token-labels", "words", "--token-words", str(words)]
    assert main([*common, "--layer", "1", "--pooling", "token", *word_flags, "--out", str(out_w)]) == 0
    probe = Probe.load(out_w)
    assert probe.metadata["token_labels"] == "words" and probe.metadata["n_token_words"] == 2
    assert probe.metadata["token_words"]["file"] == str(words)
    assert len(probe.metadata["token_words"]["sha256"]) == 64
    for extra, needle in [
        (["--all-layers", "--pooling", "token"], "--layer"),
        (["--layer", "1", "--token-labels", "lexicon"], "--pooling token"),
        (["--pooling", "token", "--token-labels", "words"], "needs --token-words"),
        (["--pooling", "token", "--token-words", str(words)], "--token-labels words only"),
        (["--pooling", "token", "--token-labels", "words", "--token-words", "nope.txt"], "nope.txt"),
        (["--pooling", "token", "--token-labels", "wordz"], "expected text, lexicon or words"),
    ]:
        capsys.readouterr()
        assert main([*common, *extra, "--out", str(tmp_path / "q")]) == 2
        assert needle in capsys.readouterr().err
        assert not (tmp_path / "q").exists()
