"""Circuit faithfulness (``patching.circuit``): sets of components patched together, checked against an
independent raw-HF reference (several ``register_forward_hook`` patches in one forward), the identity
at k = every component, and a planted circuit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from planted import CHOSEN_HEAD, CHOSEN_MLP, PAIRS, chosen_names, planted
from reference_sets import set_reference
from test_hygiene import Boom, FailingMetric
from tiny import TOXIC_WORDS

from lens.components import all_components
from lens.errors import ToxlensError
from lens.hooks import count_hooks
from lens.metrics import ToxicLogMass
from lens.model import LensModel
from lens.prompts import ContrastPairs, parse_pairs
from patching.activation import activation_patching
from patching.circuit import faithfulness, random_sets
from patching.circuit_result import COLUMNS, FaithfulnessResult

KINDS = ["gpt2", "llama"]
# Two heads of one layer, heads of two layers and MLPs: several hooks on one HookPoint and on many.
RANKING = ["L1H2", "L1H0", "L2.mlp", "L0H1", "L0.mlp", "L2H3"]


def case(model: LensModel) -> tuple[ContrastPairs, ToxicLogMass]:
    # PAIRS: the marker word is never the last token, and there are several lengths.
    pairs = parse_pairs([json.dumps({"toxic": t, "benign": b}) for t, b in PAIRS], model)
    ids = [int(model.tokenizer.convert_tokens_to_ids(w)) for w in TOXIC_WORDS]
    return pairs, ToxicLogMass(ids)


def raw(pairs: ContrastPairs) -> list[tuple[list[int], list[int]]]:
    return [(list(p.toxic_ids), list(p.benign_ids)) for p in pairs.pairs]


@pytest.mark.parametrize("kind", KINDS)
def test_sets_equal_raw_hf_reference(tiny_pair: Any, kind: str) -> None:
    model, ref = tiny_pair(kind)
    pairs, metric = case(model)
    model.final_logits(pairs.tokens([0], "benign"))  # the bridge adds its own hooks on first use
    hooks0 = count_hooks(model.bridge)
    # batch_size 5: chunks mix pairs, sets and start layers.
    result = faithfulness(
        model, pairs, metric, RANKING, [1, 2, 4, 6], n_random=3, batch_size=5, progress=False
    )
    assert count_hooks(model.bridge) == hooks0
    sets = result.top_sets + [s for per_k in result.random_sets for s in per_k]
    into_benign, into_toxic, m_toxic, m_benign = set_reference(ref, raw(pairs), metric.ids.tolist(), sets)
    n_k, n = len(result.ks), len(pairs)
    torch.testing.assert_close(result.m_toxic.double(), m_toxic, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.m_benign.double(), m_benign, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.suff_patched.double(), into_benign[:, :n_k], atol=1e-5, rtol=0)
    torch.testing.assert_close(result.nec_patched.double(), into_toxic[:, :n_k], atol=1e-5, rtol=0)
    rand_b = result.random_suff_patched.reshape(n, -1).double()
    rand_t = result.random_nec_patched.reshape(n, -1).double()
    torch.testing.assert_close(rand_b, into_benign[:, n_k:], atol=1e-5, rtol=0)
    torch.testing.assert_close(rand_t, into_toxic[:, n_k:], atol=1e-5, rtol=0)
    # The scores: ratios of means, by hand from the reference.
    d = m_toxic.mean() - m_benign.mean()
    suff = (into_benign[:, :n_k].mean(0) - m_benign.mean()) / d
    nec = (m_toxic.mean() - into_toxic[:, :n_k].mean(0)) / d
    torch.testing.assert_close(result.sufficiency.double(), suff, atol=1e-4, rtol=0)
    torch.testing.assert_close(result.necessity.double(), nec, atol=1e-4, rtol=0)
    per_pair = (into_benign[:, 0] - m_benign) / (m_toxic - m_benign)
    torch.testing.assert_close(result.per_pair_sufficiency[:, 0].double(), per_pair, atol=1e-4, rtol=1e-3)
    assert result.top_sets[2] == RANKING[:4]


def test_one_component_equals_activation_patching(tiny_pair: Any) -> None:
    model, _ = tiny_pair("gpt2")
    pairs, metric = case(model)
    names = all_components(model.n_layers, model.n_heads)
    single = activation_patching(model, pairs, metric, "components", progress=False)
    result = faithfulness(model, pairs, metric, names, [1], n_random=1, progress=False)
    torch.testing.assert_close(result.sufficiency[0], single.mean[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_every_component_gives_one(tiny_pair: Any, kind: str) -> None:
    model, _ = tiny_pair(kind)
    pairs, metric = case(model)
    names = all_components(model.n_layers, model.n_heads)
    result = faithfulness(model, pairs, metric, names[::-1], [len(names)], n_random=2, progress=False)
    table = result.to_dataframe()
    assert list(table.columns) == COLUMNS
    for col in ("sufficiency", "necessity", "random_mean", "random_necessity_mean"):
        assert abs(float(table[col][0]) - 1.0) < 1e-4, (col, table)
    # ... for every pair too: the last token is shared, so the final residual is the other run's.
    assert float((result.per_pair_sufficiency - 1).abs().max()) < 1e-3
    assert float((result.per_pair_necessity - 1).abs().max()) < 1e-3
    assert result.k80 == len(names) and result.random_k80 == len(names)


@pytest.mark.parametrize(("kind", "head", "mlp"), [("gpt2", CHOSEN_HEAD, CHOSEN_MLP), ("llama", (0, 3), 1)])
def test_planted_circuit_is_faithful(tmp_path: Path, kind: str, head: tuple[int, int], mlp: int) -> None:
    model, _ = planted(kind, tmp_path, head, mlp)
    pairs, metric = case(model)
    located = activation_patching(model, pairs, metric, "components", progress=False)
    ranking = located.top_k(len(located.names()))["name"].tolist()
    assert set(ranking[:2]) == chosen_names(head, mlp)
    result = faithfulness(model, pairs, metric, ranking, [1, 2, 3, 5], n_random=20, seed=0, progress=False)
    assert result.k80 is not None and result.k80 <= 2
    assert result.random_k80 is None or result.random_k80 > 2
    table = result.to_dataframe().set_index("k")
    assert float(table.loc[2, "sufficiency"]) > 0.8 and float(table.loc[2, "necessity"]) > 0.8
    assert float(table.loc[2, "random_mean"]) < 0.8
    assert float(table.loc[1, "random_mean"]) < 0.5
    # The serial path: either planted component alone is necessary.
    assert float(table.loc[1, "necessity"]) > 0.8


def test_random_draws_are_seeded(tiny_pair: Any) -> None:
    model, _ = tiny_pair("llama")
    pairs, metric = case(model)
    pool = all_components(model.n_layers, model.n_heads)
    assert random_sets(pool, [2, 5], 4, seed=3) == random_sets(pool, [2, 5], 4, seed=3)
    assert random_sets(pool, [2, 5], 4, seed=3) != random_sets(pool, [2, 5], 4, seed=4)
    runs = [
        faithfulness(model, pairs, metric, RANKING, [2, 3], 5, seed, progress=False) for seed in (7, 7, 8)
    ]
    assert runs[0].random_sets == runs[1].random_sets
    assert torch.equal(runs[0].random_sufficiency, runs[1].random_sufficiency)
    assert runs[0].random_sets != runs[2].random_sets
    for per_k, k in zip(runs[0].random_sets, runs[0].ks):
        assert all(len(s) == k == len(set(s)) and set(s) <= set(pool) for s in per_k)


def test_kind_restricts_ranking_and_pool(tiny_pair: Any) -> None:
    model, _ = tiny_pair("gpt2")
    pairs, metric = case(model)
    result = faithfulness(model, pairs, metric, RANKING, [1, 2], 3, kind="mlp", progress=False)
    assert result.top_sets == [["L2.mlp"], ["L2.mlp", "L0.mlp"]]
    assert result.metadata["pool"] == ["L0.mlp", "L1.mlp", "L2.mlp"]
    assert all(name.endswith(".mlp") for per_k in result.random_sets for s in per_k for name in s)


def test_save_and_load_round_trip(tiny_pair: Any, tmp_path: Path) -> None:
    model, _ = tiny_pair("gpt2")
    pairs, metric = case(model)
    result = faithfulness(model, pairs, metric, RANKING, [1, 3], 4, progress=False)
    result.save(tmp_path / "out")
    loaded = FaithfulnessResult.load(tmp_path / "out")
    assert loaded.to_dataframe().equals(result.to_dataframe())
    assert loaded.random_sets == result.random_sets and loaded.k80 == result.k80
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    assert data["metadata"]["seed"] == 0 and data["metadata"]["n_random"] == 4
    assert len(data["random_draws"][1]["draws"]) == 4
    assert len(data["per_pair"]["sufficiency"]) == len(pairs)


@pytest.mark.parametrize(
    ("ks", "n_random", "ranking", "needle"),
    [
        ([0], 3, RANKING, "positive integer"),
        ([16], 3, all_components(3, 4), "larger than"),
        ([7], 3, RANKING, "larger than"),
        ([1], 0, RANKING, "n_random"),
        ([1], 3, ["L9H0"], "does not exist"),
        ([1], 3, ["L0H0", "L0H0"], "more than once"),
    ],
)
def test_bad_arguments(tiny_pair: Any, ks: list[int], n_random: int, ranking: list[str], needle: str) -> None:
    model, _ = tiny_pair("gpt2")
    pairs, metric = case(model)
    with pytest.raises(ToxlensError, match=needle):
        faithfulness(model, pairs, metric, ranking, ks, n_random, progress=False)


@pytest.mark.parametrize("kind", KINDS)
def test_exception_leaves_no_hooks(tiny_pair: Any, kind: str) -> None:
    model, _ = tiny_pair(kind)
    pairs, metric = case(model)
    tokens = pairs.tokens([0], "benign")
    before = model.final_logits(tokens)
    hooks0 = count_hooks(model.bridge)
    failing = FailingMetric(metric.ids.tolist(), fail_at=16)  # 6 separation + 6 clean calls, then the sets
    with pytest.raises(Boom):
        faithfulness(model, pairs, failing, RANKING, [2, 4], 3, batch_size=4, progress=False)
    assert failing.calls == 16
    assert count_hooks(model.bridge) == hooks0
    assert torch.equal(model.final_logits(tokens), before)
