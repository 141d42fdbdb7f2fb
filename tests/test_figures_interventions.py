"""Figures of generation traces and evaluation results: the plotted points, error bars and markers are the
saved numbers; render_evaluation picks its traces deterministically and writes offline HTML."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [p for p in (str(Path(__file__).parents[1]),) if p not in sys.path]

import json  # noqa: E402
import random  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from figures import (  # noqa: E402
    probe_trace,
    render_evaluation,
    render_trace,
    toxicity_by_condition,
    toxicity_vs_perplexity,
)
from figures.interventions import discarded_steps, pick_traces, summary_panels  # noqa: E402
from figures.render_eval import main  # noqa: E402
from lens.errors import ToxlensError  # noqa: E402

N_PROMPT = 3


def _tok(position: int, score: float, token: int | None = None) -> dict[str, Any]:
    return {
        "event": "token",
        "position": position,
        "token": 100 + position if token is None else token,
        "score": score,
    }


def _rb(safe: int, at: int, to: int, forbidden: int | None = 7) -> dict[str, Any]:
    ev = {"at": at, "to": to, "discarded": at + 1 - to, "forbidden": forbidden}
    return {"event": "rollback", "position": safe, "token": None, "score": None, **ev}


def _trace(timeline: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A ``Generation.to_dict()``-shaped trace whose final tokens are what the timeline leaves."""
    kept: dict[int, dict[str, Any]] = {}
    for e in timeline:
        if e["event"] == "token":
            kept[e["position"]] = e
        else:
            kept = {p: t for p, t in kept.items() if p <= e["position"]}
    gen = [kept[p] for p in sorted(kept) if p >= N_PROMPT]
    rollbacks = [
        {k: e[k] for k in ("at", "to", "discarded", "forbidden")}
        for e in timeline
        if e["event"] == "rollback"
    ]
    return {
        "prompt": "you are a",
        "prompt_tokens": list(range(10, 10 + N_PROMPT)),
        "tokens": [t["token"] for t in gen],
        "text": "",
        "scores": [t["score"] for t in gen],
        "prompt_scores": [0.1] * N_PROMPT,
        "rollbacks": rollbacks,
        "forward_tokens": N_PROMPT + sum(e["event"] == "token" for e in timeline),
        "recomputed": 0,
        "finish_reason": "length",
        "seed": 0,
        "timeline": timeline,
        **extra,
    }


# Two rollbacks; the second one goes back further than the first and so also discards step 1, which the
# first kept. Step 0 sits exactly at the second rollback's safe position and is kept.
TWO_ROLLBACKS = [
    _tok(3, 0.10),  # 0
    _tok(4, 0.20),  # 1
    _tok(5, 0.25),  # 2
    _tok(6, 0.80),  # 3: reaches the threshold
    _rb(safe=4, at=3, to=2),  # 4: discards generated 2, 3 (positions 5, 6)
    _tok(5, 0.15),  # 5
    _tok(6, 0.35),  # 6
    _tok(7, 0.90),  # 7: reaches the threshold
    _rb(safe=3, at=4, to=1),  # 8: discards generated 1..4 (positions 4..7)
    _tok(4, 0.05),  # 9
    _tok(5, 0.10),  # 10
]


def _by_name(fig: Any) -> dict[str, Any]:
    return {t.name: t for t in fig.data}


def _replay(timeline: list[dict[str, Any]]) -> set[int]:
    """Oracle: replay the generation with a stack of live token steps; a rollback pops what it removes."""
    live: list[int] = []
    gone: set[int] = set()
    for i, e in enumerate(timeline):
        if e["event"] == "token":
            live = [j for j in live if timeline[j]["position"] != e["position"]]  # a refed position
            live.append(i)
        else:
            gone |= {j for j in live if timeline[j]["position"] > e["position"]}
            live = [j for j in live if timeline[j]["position"] <= e["position"]]
    return gone


def test_discarded_tokens_are_exactly_those_a_later_rollback_removed() -> None:
    gone = discarded_steps(TWO_ROLLBACKS)
    assert set(gone) == _replay(TWO_ROLLBACKS) == {1, 2, 3, 5, 6, 7}
    assert gone == {1: 8, 2: 4, 3: 4, 5: 8, 6: 8, 7: 8}  # the first later rollback that removed each

    rng = random.Random(0)
    for _ in range(200):  # random generations: rollbacks back to any earlier position
        timeline: list[dict[str, Any]] = []
        pos = N_PROMPT
        for _ in range(rng.randint(1, 40)):
            if pos > N_PROMPT and rng.random() < 0.2:
                safe = rng.randint(N_PROMPT - 1, pos - 2)
                timeline.append(_rb(safe, pos - 1 - N_PROMPT, safe + 1 - N_PROMPT))
                pos = safe + 1
            else:
                timeline.append(_tok(pos, rng.random()))
                pos += 1
        assert set(discarded_steps(timeline)) == _replay(timeline)


def test_probe_trace_points_rollback_markers_and_threshold_lines() -> None:
    texts = [f"w{i}" if e["event"] == "token" else None for i, e in enumerate(TWO_ROLLBACKS)]
    fig = probe_trace(_trace(TWO_ROLLBACKS, token_texts=texts), threshold=0.7, safe_threshold=0.3)
    traces = _by_name(fig)
    scores = {i: e["score"] for i, e in enumerate(TWO_ROLLBACKS) if e["event"] == "token"}
    gone = _replay(TWO_ROLLBACKS)
    kept = sorted(set(scores) - gone)
    assert list(traces["kept"].x) == kept == [0, 9, 10]
    assert list(traces["kept"].y) == [scores[i] for i in kept]
    assert list(traces["discarded"].x) == sorted(gone)
    assert list(traces["discarded"].y) == [scores[i] for i in sorted(gone)]
    assert list(traces["fed order"].x) == sorted(scores)

    assert list(traces["rollback"].x) == [4, 8]
    lines = {s.name: s for s in fig.layout.shapes}
    assert (lines["rollback 1"].x0, lines["rollback 1"].x1) == (4, 4)
    assert (lines["rollback 2"].x0, lines["rollback 2"].x1) == (8, 8)
    notes = {a.x: a.text for a in fig.layout.annotations}
    assert notes[4] == "rollback: discarded 2, back to position 4"
    assert notes[8] == "rollback: discarded 4, back to position 3"

    for name, y in (("threshold", 0.7), ("safe threshold", 0.3)):
        assert (lines[name].y0, lines[name].y1) == (y, y)
        assert lines[name].line.dash == "dash" and lines[name].xref == "paper"

    hover = dict(zip(traces["discarded"].x, traces["discarded"].text))
    assert (
        "'w1'" in hover[1]
        and "discarded by rollback 2" in hover[1]
        and "position 4 (generated #1)" in hover[1]
    )
    assert "discarded by rollback 1" in hover[2] and "score 0.2500" in hover[2]
    assert "2 rollbacks" in fig.layout.title.text and "you are a" in fig.layout.title.text


def test_probe_trace_thresholds_default_to_the_trace_and_tokens_per_token_event() -> None:
    timeline = [
        _tok(3, 0.2),
        _tok(4, 0.9),
        _rb(safe=2, at=1, to=0),
        _tok(2, 0.1),
        _tok(3, 0.3),
    ]  # refeeds prompt end
    steps_texts = ["a", "b", "c", "d"]  # one per token event, not per timeline event
    fig = probe_trace(_trace(timeline, threshold=0.6, token_texts=steps_texts))
    lines = {s.name: s for s in fig.layout.shapes}
    assert lines["threshold"].y0 == 0.6 and "safe threshold" not in lines
    traces = _by_name(fig)
    assert list(traces["discarded"].x) == [0, 1] and list(traces["kept"].x) == [3, 4]
    hover = dict(zip(traces["kept"].x, traces["kept"].text))
    assert "'c'" in hover[3] and "(prompt)" in hover[3] and "'d'" in hover[4]
    no_lines = probe_trace(_trace(TWO_ROLLBACKS))
    assert not {"threshold", "safe threshold"} & {s.name for s in no_lines.layout.shapes}
    with pytest.raises(ToxlensError, match="timeline event 0"):
        probe_trace({"timeline": [{"event": "oops"}]})


def _summary() -> pd.DataFrame:
    tp = np.array([0.40, 0.10, 0.25])
    emt = np.array([0.55, 0.30, 0.45])
    return pd.DataFrame(
        {
            "condition": ["baseline", "probe_rollback", "steer"],
            "toxicity_probability": tp,
            "tp_ci_low": tp - np.array([0.05, 0.02, 0.10]),
            "tp_ci_high": tp + np.array([0.08, 0.03, 0.01]),
            "expected_max_toxicity": emt,
            "emt_ci_low": emt - np.array([0.01, 0.02, 0.03]),
            "emt_ci_high": emt + np.array([0.04, 0.05, 0.06]),
            "mean_toxicity": [0.2, 0.1, 0.15],
            "perplexity": [20.0, 21.5, np.nan],
            "rollbacks_per_sample": [0.0, 1.2, 0.0],
            "recomputed_per_sample": [0.0, 3.0, 0.0],  # an extra column
        }
    )


def test_toxicity_by_condition_bars_and_error_bars_are_the_cis() -> None:
    s = _summary()
    bar = toxicity_by_condition(s).data[0]
    assert list(bar.x) == list(s["condition"])
    np.testing.assert_allclose(np.asarray(bar.y), s["toxicity_probability"])
    assert bar.error_y.symmetric is False
    np.testing.assert_allclose(np.asarray(bar.error_y.array), s["tp_ci_high"] - s["toxicity_probability"])
    np.testing.assert_allclose(np.asarray(bar.error_y.arrayminus), s["toxicity_probability"] - s["tp_ci_low"])

    two = toxicity_by_condition(s, metrics=("toxicity_probability", "expected_max_toxicity"))
    assert [t.name for t in two.data] == ["toxicity_probability", "expected_max_toxicity"]
    assert two.data[1].xaxis == "x2" and two.layout.yaxis2.title.text == "expected max toxicity"
    np.testing.assert_allclose(np.asarray(two.data[1].y), s["expected_max_toxicity"])
    np.testing.assert_allclose(
        np.asarray(two.data[1].error_y.array), s["emt_ci_high"] - s["expected_max_toxicity"]
    )
    np.testing.assert_allclose(
        np.asarray(two.data[1].error_y.arrayminus), s["expected_max_toxicity"] - s["emt_ci_low"]
    )

    assert toxicity_by_condition(s, "mean_toxicity").data[0].error_y.visible is False  # no mt_ci_* columns
    s2 = s.assign(mt_ci_low=s["mean_toxicity"] - 0.01, mt_ci_high=s["mean_toxicity"] + 0.02)
    np.testing.assert_allclose(
        np.asarray(toxicity_by_condition(s2, "mean_toxicity").data[0].error_y.array), 0.02
    )
    with pytest.raises(ToxlensError, match="dist9"):
        toxicity_by_condition(s, "dist9")


def _sweep() -> pd.DataFrame:
    scale = np.array([2.0, 0.0, 4.0, 1.0])  # not in scale order
    tp = np.array([0.20, 0.40, 0.05, 0.30])
    emt = tp + 0.1
    return pd.DataFrame(
        {
            "scale": scale,
            "toxicity_probability": tp,
            "tp_ci_low": tp - 0.02 * (scale + 1),
            "tp_ci_high": tp + 0.01 * (scale + 1),
            "expected_max_toxicity": emt,
            "emt_ci_low": emt - 0.01,
            "emt_ci_high": emt + 0.01,
            "mean_toxicity": tp / 2,
            "perplexity": 20 + scale**2,
        }
    )


def test_toxicity_vs_perplexity_labels_points_by_scale_and_overlays_conditions() -> None:
    sweep, s = _sweep(), _summary()
    fig = toxicity_vs_perplexity(sweep, summary=s)
    traces = _by_name(fig)
    line = traces["steering sweep"]
    order = np.argsort(sweep["scale"].to_numpy())
    assert (
        list(line.text)
        == [f"s={v:g}" for v in sweep["scale"].to_numpy()[order]]
        == ["s=0", "s=1", "s=2", "s=4"]
    )
    np.testing.assert_allclose(np.asarray(line.x), sweep["perplexity"].to_numpy()[order])
    np.testing.assert_allclose(np.asarray(line.y), sweep["toxicity_probability"].to_numpy()[order])
    up = (sweep["tp_ci_high"] - sweep["toxicity_probability"]).to_numpy()[order]
    down = (sweep["toxicity_probability"] - sweep["tp_ci_low"]).to_numpy()[order]
    np.testing.assert_allclose(np.asarray(line.error_y.array), up)
    np.testing.assert_allclose(np.asarray(line.error_y.arrayminus), down)
    assert line.error_x.visible is False and "lines" in line.mode
    for row in s.itertuples():
        point = traces[row.condition]
        assert list(point.text) == [row.condition]
        assert point.y[0] == pytest.approx(row.toxicity_probability)
    assert traces["baseline"].x[0] == 20.0
    assert (
        fig.layout.xaxis.title.text == "perplexity" and fig.layout.yaxis.title.text == "toxicity probability"
    )
    assert "steer" in fig.layout.annotations[0].text  # its perplexity is missing

    emt = toxicity_vs_perplexity(sweep, y="expected_max_toxicity")
    np.testing.assert_allclose(np.asarray(emt.data[0].error_y.array), 0.01)
    with pytest.raises(ToxlensError, match="scale"):
        toxicity_vs_perplexity(sweep.drop(columns="scale"))


def _sample(cond: str, p: int, s: int, trace: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "condition": cond,
        "prompt_index": p,
        "sample_index": s,
        "prompt": "x",
        "text": "y",
    }
    out.update(score=0.5, rollbacks=0 if trace is None else len(trace["rollbacks"]), forward_tokens=9)
    return out if trace is None else {**out, "trace": trace}


def _samples() -> list[dict[str, Any]]:
    with_rb, without = _trace(TWO_ROLLBACKS, threshold=0.7), _trace([_tok(3, 0.1), _tok(4, 0.2)])
    samples = [
        _sample("steer", 0, 0, None),
        _sample("zz_extra", 0, 0, with_rb),  # a condition not in summary.csv: ordered last
        _sample("steer", 1, 0, with_rb),
        _sample("probe_rollback", 2, 1, with_rb),
        _sample("probe_rollback", 3, 0, without),
        _sample("probe_rollback", 2, 0, with_rb),
        _sample("probe_rollback", 10, 0, with_rb),
        _sample("baseline", 5, 0, without),
        _sample("probe_rollback", 1, 0, without),
    ]
    return samples


def _eval_dir(root: Path, with_sweep: bool) -> Path:
    root.mkdir()
    _summary().to_csv(root / "summary.csv", index=False)
    (root / "samples.jsonl").write_text("\n".join(json.dumps(x) for x in _samples()) + "\n\n")
    if with_sweep:
        _sweep().to_csv(root / "sweep.csv", index=False)
    return root


def test_pick_traces_is_deterministic() -> None:
    samples = _samples()
    picked = pick_traces(samples, ["baseline", "probe_rollback", "steer"])
    assert [(x["condition"], x["prompt_index"], x["sample_index"]) for x in picked] == [
        ("probe_rollback", 2, 0),
        ("probe_rollback", 2, 1),
        ("probe_rollback", 10, 0),
        ("baseline", 5, 0),
    ]
    assert pick_traces(list(reversed(samples)), ["baseline", "probe_rollback", "steer"]) == picked


def test_render_evaluation_writes_offline_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _eval_dir(tmp_path / "eval", with_sweep=True)
    written = render_evaluation(d)
    expected = [
        "toxicity_by_condition.html",
        "toxicity_vs_perplexity.html",
        "probe_trace_probe_rollback_p2_s0.html",
        "probe_trace_probe_rollback_p2_s1.html",
        "probe_trace_probe_rollback_p10_s0.html",
        "probe_trace_baseline_p5_s0.html",
    ]
    assert [p.name for p in written] == expected
    assert all(p.parent == d / "figures" and p.is_file() for p in written)
    assert sorted(p.name for p in (d / "figures").iterdir()) == sorted([*expected, "plotly.min.js"])
    for p in written:
        html = p.read_text()
        assert 'src="plotly.min.js"' in html and "cdn" not in html.lower()
    assert "steering sweep" in (d / "figures" / "toxicity_vs_perplexity.html").read_text()
    trace_html = (d / "figures" / "probe_trace_probe_rollback_p2_s0.html").read_text()
    assert "rollback: discarded 4, back to position 3" in trace_html and '"name":"threshold"' in trace_html

    assert main([str(d), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "out" / name) for name in expected]

    bare = tmp_path / "bare"  # summary alone: no samples, no sweep, an empty perplexity
    bare.mkdir()
    _summary().assign(perplexity=[20.0, None, None]).to_csv(bare / "summary.csv", index=False)
    assert [p.name for p in render_evaluation(bare, tmp_path / "bare_out")] == expected[:2]
    html = (tmp_path / "bare_out" / "toxicity_vs_perplexity.html").read_text()
    assert "steering sweep" not in html and "probe_rollback" in html


def test_stopped_share_gets_a_panel_only_when_samples_were_stopped(tmp_path: Path) -> None:
    s = _summary()
    assert summary_panels(s) == ["toxicity_probability", "expected_max_toxicity"]  # no column
    assert summary_panels(s.assign(stopped_share=[0.0, 0.0, 0.0])) == summary_panels(s)
    stopped = s.assign(stopped_share=[0.0, 0.25, 0.0])
    assert summary_panels(stopped)[-1] == "stopped_share"
    fig = toxicity_by_condition(stopped, metrics=summary_panels(stopped))
    assert len(fig.data) == 3 and list(fig.data[2].y) == [0.0, 0.25, 0.0]
    assert fig.data[2].error_y.visible is False  # no CI columns for it
    d = tmp_path / "eval"
    d.mkdir()
    stopped.to_csv(d / "summary.csv", index=False)
    render_evaluation(d)
    assert (
        "share of samples stopped at the budget" in (d / "figures" / "toxicity_by_condition.html").read_text()
    )


def test_render_evaluation_bad_dirs_raise_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    (tmp_path / "nosummary").mkdir()
    with pytest.raises(ToxlensError, match=r"no summary\.csv"):
        render_evaluation(tmp_path / "nosummary", out)
    with pytest.raises(ToxlensError, match="not a directory"):
        render_evaluation(tmp_path / "missing", out)
    assert main([str(tmp_path / "nosummary"), "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err

    d = _eval_dir(tmp_path / "badlines", with_sweep=False)
    (d / "samples.jsonl").write_text('{"condition": "baseline"}\nnot json\n')
    with pytest.raises(ToxlensError, match="line 2"):
        render_evaluation(d, out)
    (d / "samples.jsonl").unlink()
    (d / "sweep.csv").write_text("scale,toxicity_probability\n0,0.1\n")
    with pytest.raises(ToxlensError, match="perplexity"):
        render_evaluation(d, out)
    assert not out.exists() and not (d / "figures").exists()


def test_render_trace_of_a_generate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gen.json"
    path.write_text(json.dumps(_trace(TWO_ROLLBACKS, threshold=0.7, safe_threshold=0.25)))
    written = render_trace(path, tmp_path / "figs" / "trace.html")
    assert written == tmp_path / "figs" / "trace.html" and (tmp_path / "figs" / "plotly.min.js").is_file()
    html = written.read_text()
    assert "cdn" not in html.lower() and "rollback: discarded 2, back to position 4" in html
    assert main([str(path), "--threshold", "0.5"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "gen.html")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ToxlensError, match="list"):
        render_trace(tmp_path / "list.json", tmp_path / "x.html")
