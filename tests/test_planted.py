"""Planted circuits: in a model where one head and one MLP carry the toxic effect by construction
(``tests/planted.py`` explains why they must rank first), both patching methods — and ``locate`` —
must put exactly those two components on top, with clearly positive scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from planted import CHOSEN_HEAD, CHOSEN_MLP, PAIRS, chosen_names, planted, planted_hf
from reference import activation_reference
from tiny import TOXIC_WORDS, make_tokenizer

from lens.metrics import ToxicLogMass
from lens.model import LensModel
from lens.prompts import ContrastPairs, parse_pairs
from patching.activation import activation_patching
from patching.attribution import attribution_patching
from patching.ig import integrated_gradients
from patching.relp import relevance_patching
from patching.result import PatchResult

KINDS = ["gpt2", "llama"]
# (head, mlp): the default circuit, and one placed elsewhere (so ranking first is not an accident of
# where the components sit).
PLACEMENTS = [(CHOSEN_HEAD, CHOSEN_MLP), ((0, 3), 1)]


def prepare_case(
    kind: str, tmp: Path, head: tuple[int, int], mlp: int
) -> tuple[LensModel, Any, ContrastPairs, ToxicLogMass]:
    lm, ref = planted(kind, tmp, head, mlp)
    pairs = parse_pairs([json.dumps({"toxic": t, "benign": b}) for t, b in PAIRS], lm)
    metric = ToxicLogMass([int(lm.tokenizer.convert_tokens_to_ids(w)) for w in TOXIC_WORDS])
    return lm, ref, pairs, metric


def assert_circuit_on_top(result: PatchResult, chosen: set[str]) -> None:
    scores = dict(zip(result.names(), result.mean.tolist()))
    assert set(result.top_k(2)["name"]) == chosen, result.top_k(4)
    for name in chosen:
        assert scores[name] > 0.5, (result.method, name, scores[name])
        # ... and for every single pair, not only on average.
        assert float(result.per_pair[:, result.names().index(name)].min()) > 0.5
    others = [abs(v) for n, v in scores.items() if n not in chosen]
    assert max(others) < 0.05 * min(scores[n] for n in chosen), (result.method, max(others))
    # The other components are small but not switched off.
    assert max(others) > 1e-6


@pytest.mark.parametrize(("head", "mlp"), PLACEMENTS, ids=["L1H2-L2.mlp", "L0H3-L1.mlp"])
@pytest.mark.parametrize("kind", KINDS)
def test_planted_circuit_ranks_first(tmp_path: Path, kind: str, head: tuple[int, int], mlp: int) -> None:
    lm, ref, pairs, metric = prepare_case(kind, tmp_path, head, mlp)
    chosen = chosen_names(head, mlp)
    activation = activation_patching(lm, pairs, metric, "components", progress=False)
    attribution = attribution_patching(lm, pairs, metric, "components")
    relp = relevance_patching(lm, pairs, metric, "components")
    relp_ah = relevance_patching(lm, pairs, metric, "components", ah_rule=True)
    ig = integrated_gradients(lm, pairs, metric, "components", steps=5)
    # The planted circuit makes every toxic prompt clearly more toxic than its benign twin.
    assert bool((activation.m_toxic > activation.m_benign + 0.5).all())
    assert_circuit_on_top(activation, chosen)
    for estimate in (attribution, relp, relp_ah, ig):
        assert_circuit_on_top(estimate, chosen)
    # Hand-set, atypical weights: the fast sweep still equals the independent reference.
    raw = [(list(p.toxic_ids), list(p.benign_ids)) for p in pairs.pairs]
    expected = activation_reference(ref, raw, metric.ids.tolist(), "components")
    torch.testing.assert_close(activation.patched.double(), expected.patched, atol=1e-4, rtol=0)
    torch.testing.assert_close(activation.mean.double(), expected.mean, atol=1e-4, rtol=0)


def test_planted_model_is_deterministic(tmp_path: Path) -> None:
    tok = make_tokenizer(tmp_path / "tok")
    for kind in KINDS:
        a, b = planted_hf(kind, tok).state_dict(), planted_hf(kind, tok).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", KINDS)
def test_locate_finds_planted_circuit(tmp_path: Path, kind: str) -> None:
    from patching.locate import locate, write_locate

    lm, _ref, pairs, metric = prepare_case(kind, tmp_path, CHOSEN_HEAD, CHOSEN_MLP)
    chosen = chosen_names()
    result = locate(lm, pairs, metric, method="both", progress=False)
    table = result.table()
    top2 = table[table["rank"] <= 2]
    assert set(top2["component"]) == chosen
    assert bool((top2["score_activation"] > 0.5).all())
    assert bool((top2["score_attribution"] > 0.5).all())
    # The two methods agree on the top two, whichever ranks the table.
    assert set(table.nlargest(2, "score_attribution")["component"]) == chosen
    out = tmp_path / "locate"
    out.mkdir()
    write_locate(result, out, {})
    csv = pd.read_csv(out / "components.csv")
    assert set(csv.sort_values("rank").head(2)["component"]) == chosen
