"""Figures: the plotted numbers are the result's numbers, cells are matched by name, render() writes files."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [p for p in (str(Path(__file__).parents[1]), str(Path(__file__).parent)) if p not in sys.path]

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from figures import attribution_scatter, heads_heatmap, mlp_bar, pearson_r, resid_pos_heatmap, write_figures  # noqa: E402
from figures.render import main, render  # noqa: E402
from lens.components import all_components  # noqa: E402
from lens.errors import ToxlensError  # noqa: E402
from patching.result import PatchResult  # noqa: E402

N_LAYERS, N_HEADS, N_PAIRS = 3, 4, 5


def _result(
    dims: tuple[str, ...], coords: dict, patched: torch.Tensor, method: str = "activation", **meta
) -> PatchResult:
    # m_toxic = 1, m_benign = 0 for every pair, so score = mean over pairs of ``patched``.
    return PatchResult(
        method, dims, coords, patched, torch.ones(N_PAIRS), torch.zeros(N_PAIRS), {"n_boot": 200, **meta}
    )


def _patched(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(N_PAIRS, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def heads_and_components() -> tuple[PatchResult, PatchResult]:
    """A (layer, head) result and a (component,) result with the same head numbers plus MLPs."""
    heads = _patched(N_LAYERS, N_HEADS)
    mlps = _patched(N_LAYERS, seed=1) + 2.0
    per_layer = [torch.cat([heads[:, layer], mlps[:, layer : layer + 1]], dim=1) for layer in range(N_LAYERS)]
    comp = _result(
        ("component",), {"component": all_components(N_LAYERS, N_HEADS)}, torch.cat(per_layer, dim=1)
    )
    hl = _result(("layer", "head"), {"layer": list(range(N_LAYERS)), "head": list(range(N_HEADS))}, heads)
    return hl, comp


def test_heads_heatmap_z_is_the_score_for_both_forms(heads_and_components) -> None:
    hl, comp = heads_and_components
    expected = hl.patched.mean(0).numpy()
    np.testing.assert_allclose(hl.mean.numpy(), expected, rtol=1e-6)
    for result in (hl, comp):
        fig = heads_heatmap(result)
        trace = fig.data[0]
        np.testing.assert_allclose(np.asarray(trace.z, dtype=float), expected, rtol=1e-6)
        assert list(trace.x) == list(range(N_HEADS)) and list(trace.y) == list(range(N_LAYERS))
        assert trace.zmid == 0 and fig.layout.yaxis.autorange == "reversed"
        assert fig.layout.xaxis.title.text == "head" and fig.layout.yaxis.title.text == "layer"
        assert trace.colorscale[-1][1].lower() in ("rgb(103,0,31)", "#67001f")  # RdBu reversed: top is red
        hover = trace.text[2][1]
        assert "L2H1" in hover and f"{expected[2, 1]:.4f}" in hover and f"n_pairs {N_PAIRS}" in hover
        assert f"[{float(result.to_dataframe().set_index('name').loc['L2H1', 'ci_low']):.4f}," in hover


def test_heads_heatmap_rejects_results_without_heads() -> None:
    mlps = _result(("layer",), {"layer": [0, 1, 2]}, _patched(3), component="mlp")
    with pytest.raises(ToxlensError, match="dims"):
        heads_heatmap(mlps)
    only_mlps = _result(("component",), {"component": ["L0.mlp", "L1.mlp"]}, _patched(2))
    with pytest.raises(ToxlensError, match="no attention heads"):
        heads_heatmap(only_mlps)


def test_mlp_bar_scores_and_asymmetric_error_bars(heads_and_components) -> None:
    _, comp = heads_and_components
    mlps = _result(
        ("layer",), {"layer": list(range(N_LAYERS))}, _patched(N_LAYERS, seed=1) + 2.0, component="mlp"
    )
    for result in (mlps, comp):
        frame = result.to_dataframe()
        frame = frame[frame["name"].str.endswith(".mlp")]
        score, lo, hi = (frame[c].to_numpy() for c in ("score", "ci_low", "ci_high"))
        assert np.all(lo <= score) and np.all(score <= hi)  # so the bars are exactly ci - score
        bar = mlp_bar(result).data[0]
        assert list(bar.x) == list(range(N_LAYERS))
        np.testing.assert_allclose(np.asarray(bar.y), score, rtol=1e-6)
        np.testing.assert_allclose(
            np.asarray(bar.y), (_patched(N_LAYERS, seed=1) + 2.0).mean(0).numpy(), rtol=1e-5
        )
        assert bar.error_y.symmetric is False
        np.testing.assert_allclose(np.asarray(bar.error_y.array), hi - score, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(bar.error_y.arrayminus), score - lo, rtol=1e-5, atol=1e-7)
    with pytest.raises(ToxlensError):
        mlp_bar(_result(("layer",), {"layer": [0, 1]}, _patched(2)))  # a layer axis that is not MLPs


def test_attribution_scatter_matches_cells_by_name_and_reports_r(heads_and_components) -> None:
    _, act = heads_and_components
    names = act.coords["component"]
    att_values = act.patched * 0.5 + _patched(len(names), seed=7) * 0.3
    order = list(reversed(range(len(names))))  # attribution lists its cells in another order
    att = _result(
        ("component",), {"component": [names[i] for i in order]}, att_values[:, order], "attribution"
    )
    fig = attribution_scatter(act, att)
    x, y = act.mean.numpy(), att_values.mean(0).numpy()
    is_head = np.array(["H" in n for n in names])
    r_all, r_heads = np.corrcoef(x, y)[0, 1], np.corrcoef(x[is_head], y[is_head])[0, 1]
    assert pearson_r(x, y) == pytest.approx(r_all, abs=1e-9)
    assert f"r = {r_all:.3f} (all {len(names)} cells)" in fig.layout.title.text
    assert f"r = {r_heads:.3f} ({is_head.sum()} heads)" in fig.layout.title.text
    points = {n: (px, py) for t in fig.data for n, px, py in zip(t.text, t.x, t.y)}
    for i, n in enumerate(names):
        assert points[n] == pytest.approx((x[i], y[i]), rel=1e-5)
    assert {t.name for t in fig.data} == {"head", "mlp"}
    assert fig.layout.shapes[0].line.dash == "dash"


def test_attribution_scatter_raises_on_different_cells(heads_and_components) -> None:
    hl, comp = heads_and_components
    with pytest.raises(ToxlensError, match=r"only in activation L0\.mlp"):
        attribution_scatter(comp, hl)


def test_pearson_r_edge_cases() -> None:
    assert np.isnan(pearson_r([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]))
    assert np.isnan(pearson_r([1.0], [2.0]))
    assert pearson_r([0.0, 1.0, 2.0, np.nan], [0.0, 2.0, 4.0, 1.0]) == pytest.approx(1.0)
    with pytest.raises(ToxlensError):
        pearson_r([1.0, 2.0], [1.0])


def test_resid_pos_heatmap() -> None:
    result = _result(
        ("layer", "pos"), {"layer": [0, 1, 2], "pos": [0, 1, 2, 3]}, _patched(3, 4), component="resid_pre"
    )
    fig = resid_pos_heatmap(result, tokens=["you", "are", "my", "you"])
    np.testing.assert_allclose(np.asarray(fig.data[0].z, dtype=float), result.mean.numpy(), rtol=1e-6)
    assert list(fig.layout.xaxis.ticktext) == ["you (0)", "are (1)", "my (2)", "you (3)"]
    assert "L1.resid_pre@2" in fig.data[0].text[1][2]
    with pytest.raises(ToxlensError, match="3 token labels"):
        resid_pos_heatmap(result, tokens=["a", "b", "c"])


def test_write_figures_is_offline_and_writes_the_bundle_once(tmp_path, heads_and_components) -> None:
    hl, comp = heads_and_components
    paths = write_figures({"a": heads_heatmap(hl), "b.html": mlp_bar(comp)}, tmp_path / "figs")
    assert [p.name for p in paths] == ["a.html", "b.html"]
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["a.html", "b.html", "plotly.min.js"]
    html = paths[0].read_text()
    assert 'src="plotly.min.js"' in html and "cdn" not in html.lower()
    assert paths[0].stat().st_size < 100_000


def test_render_saved_result_and_locate_dir(tmp_path, heads_and_components, capsys) -> None:
    _, comp = heads_and_components
    comp.save(tmp_path / "single")
    written = render(tmp_path / "single")
    assert sorted(p.name for p in written) == ["heads_heatmap.html", "mlp_bar.html"]
    assert all(p.parent == tmp_path / "single" / "figures" and p.is_file() for p in written)

    att = _result(("component",), comp.coords, comp.patched * 0.9, "attribution")
    comp.save(tmp_path / "locate" / "activation")
    att.save(tmp_path / "locate" / "attribution")
    (tmp_path / "locate" / "result.json").write_text(json.dumps({"methods": ["both"]}))  # the locate summary
    assert main([str(tmp_path / "locate"), "--out", str(tmp_path / "out")]) == 0
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"heads_heatmap.html", "mlp_bar.html", "attribution_vs_activation.html"} <= names
    assert str(tmp_path / "out" / "attribution_vs_activation.html") in capsys.readouterr().out

    pos = _result(
        ("layer", "pos"), {"layer": [0, 1], "pos": [0, 1, 2]}, _patched(2, 3), component="resid_pre"
    )
    pos.save(tmp_path / "pos")
    assert [p.name for p in render(tmp_path / "pos")] == ["resid_pos_heatmap.html"]


def test_render_bad_dirs_write_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    with pytest.raises(ToxlensError, match="not a directory"):
        render(tmp_path / "missing", out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToxlensError, match="neither a saved PatchResult"):
        render(tmp_path / "empty", out)
    (tmp_path / "broken" / "activation").mkdir(parents=True)  # a subdir without the result files
    with pytest.raises(ToxlensError, match="holds no saved PatchResult"):
        render(tmp_path / "broken", out)
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "result.json").write_text(json.dumps({"format_version": 1}))
    (tmp_path / "corrupt" / "result.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ToxlensError, match="could not read"):
        render(tmp_path / "corrupt", out)
    assert main([str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err
    assert not out.exists()
    assert not (tmp_path / "empty" / "figures").exists()


def test_figures_of_a_real_sweep(tmp_path) -> None:
    from tiny import TOXIC_WORDS, tiny

    from lens.metrics import ToxicLogMass
    from lens.prompts import parse_pairs
    from patching.activation import activation_patching

    lm, _ = tiny("llama", tmp_path / "model")
    lines = [
        json.dumps({"toxic": "you are my idiot", "benign": "you are my friend"}),
        json.dumps({"toxic": "he is a jerk", "benign": "he is a pal"}),
    ]
    pairs = parse_pairs(lines, lm)
    metric = ToxicLogMass([lm.tokenizer.convert_tokens_to_ids(w) for w in TOXIC_WORDS])
    comp = activation_patching(lm, pairs, metric, "components", progress=False)
    heads = activation_patching(lm, pairs, metric, "heads", progress=False)
    z_comp = np.asarray(heads_heatmap(comp).data[0].z, dtype=float)
    z_heads = np.asarray(heads_heatmap(heads).data[0].z, dtype=float)
    np.testing.assert_allclose(z_heads, heads.mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(z_comp, z_heads, rtol=1e-4, atol=1e-5)
    assert z_heads.shape == (lm.n_layers, lm.n_heads)
    assert len(mlp_bar(comp).data[0].y) == lm.n_layers
