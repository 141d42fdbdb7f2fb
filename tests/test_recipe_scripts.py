"""The README's smollm2 recipes (``scripts/*_smollm2.sh``) run end to end against stub binaries: every
``toxlens`` call they make parses with the real CLI parser, names known conditions and edit parameters
(a renamed parameter would otherwise surface only hours into a real run), and reads only inputs that the
repository holds or an earlier step of the same recipe writes. Nothing is loaded or computed."""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from interventions.conditions import CONDITIONS, NEURON_CONDITIONS
from interventions.edit_methods import get_method
from toxlens.cli import build_parser
from toxlens.common import parse_edit_params

ROOT = Path(__file__).resolve().parents[1]
RECIPES = [
    "edit_inputs_smollm2.sh",
    "eval_smollm2.sh",
    "eval_edits_smollm2.sh",
    "eval_dose_smollm2.sh",
    "methods_smollm2.sh",
    "eval_dose_smollm2.sh+eval_monitors_smollm2.sh",  # the second reads what the first writes
]
# what scripts/dose_edits.py writes next to its table (the chosen settings as evaluate flags)
DOSE_FLAGS = (
    "--edit-param subtract.n_neurons=1 --edit-param subtract.scale=2.0 --edit-param project.rank=4 "
    "--edit-param project.layers=[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,"
    "27,28,29] --edit-param project.top_frac=0.25 --edit-param surgery.k=64 --edit-param surgery.alpha=1.0\n"
)
# a stub logs its argv (one shell-quoted line) and creates what a step's --out names
STUB = """#!/usr/bin/env bash
{ printf '%s' "$(basename "$0")"; printf ' %q' "$@"; echo; } >> "$RECIPE_LOG"
prev=""
for a in "$@"; do
  if [ "$prev" = "--out" ]; then
    case "$a" in
      *.csv) touch "$a"; printf '%s' "$DOSE_FLAGS" > "${a%.csv}.flags" ;;
      *.json|*.txt) touch "$a" ;;
      *) mkdir -p "$a"; echo "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q" | tee "$a/summary.csv" > "$a/faithfulness.csv" ;;
    esac
  fi
  prev=$a
done
# `python -c` reads a value a step wrote (a threshold): answer with a number
if [ "$(basename "$0")" = python ] && [ "${1:-}" = -c ]; then echo 0.5; fi
"""
READS = (
    "--prompts",
    "--perplexity-text",
    "--pairs",
    "--from",
    "--edit-from",
    "--dampen-from",
    "--ablate-from",
    "--probe",
    "--data",
    "--texts",
    "--token-words",
    "--like",
    "--calibrate",
    "--monitored",
    "--baseline",
    "--exclude-prompts",
)


def run_recipe(tmp_path: Path, name: str) -> list[list[str]]:
    """Run ``scripts/NAME`` (or each of ``A+B``, in order) in a copy of ``scripts/`` and ``data/`` with stub binaries; its calls."""
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copytree(ROOT / "data", tmp_path / "data")
    (tmp_path / "runs").mkdir()
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for stub in ("toxlens", "python"):
        (bin_dir / stub).write_text(STUB)
        (bin_dir / stub).chmod(0o755)
    log = tmp_path / "calls.log"
    env = {**os.environ, "RECIPE_LOG": str(log), "DOSE_FLAGS": DOSE_FLAGS}
    for part in name.split("+"):
        done = subprocess.run(
            ["bash", str(tmp_path / "scripts" / part)], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{part} failed under stubs:\n{done.stdout}\n{done.stderr}"
    return [shlex.split(line) for line in log.read_text().splitlines()]


def check_inputs(argv: list[str], written: list[Path], root: Path, name: str) -> None:
    for flag, value in itertools.pairwise(argv):
        if flag not in READS:
            continue
        path = Path(value)
        ok = (root / path).exists() or any(path == w or w in path.parents for w in written)
        assert ok, f"{name}: {shlex.join(argv)} reads {value} ({flag}), which no earlier step writes"


def check_toxlens_call(argv: list[str], name: str) -> None:
    args = build_parser().parse_args(argv)  # argparse exits (SystemExit) on a bad flag
    if args.command == "evaluate":
        conditions = args.conditions.split(",")
        unknown = [c for c in conditions if c not in CONDITIONS]
        assert not unknown, f"{name}: unknown conditions {unknown}"
        params = parse_edit_params(args.edit_param)
        for c in conditions:
            if c not in NEURON_CONDITIONS:
                continue
            base = c.partition("+")[0]
            mirrored = params.get(base.removesuffix("-random"), {}) if base.endswith("-random") else {}
            get_method(base).resolve({**mirrored, **params.get(base, {})})
    elif args.command == "edit":
        items = [f"{args.method}.{kv}" for kv in (args.edit_param or [])]
        get_method(args.method).resolve(parse_edit_params(items).get(args.method))


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_calls_are_valid_and_chained(tmp_path: Path, name: str) -> None:
    calls = run_recipe(tmp_path, name)
    assert any(c[0] == "toxlens" for c in calls), f"{name} made no toxlens call"
    written: list[Path] = []
    for argv in calls:
        check_inputs(argv, written, tmp_path, name)
        if argv[0] == "toxlens":
            check_toxlens_call(argv[1:], name)
        if "--out" in argv:
            written.append(Path(argv[argv.index("--out") + 1]))


def test_a_renamed_edit_parameter_is_caught(tmp_path: Path) -> None:
    """The check can fail: a recipe passing a parameter the registry does not know is refused."""
    from lens.errors import ToxlensError

    with pytest.raises(ToxlensError, match="no parameter 'exclude_located'"):
        check_toxlens_call(
            [
                "evaluate",
                "--model",
                "m",
                "--prompts",
                "p.jsonl",
                "--conditions",
                "project-random",
                "--edit-param",
                "project-random.exclude_located=true",
                "--out",
                str(tmp_path / "o"),
            ],
            "inline",
        )


def test_a_recipe_reading_an_unwritten_input_is_caught(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="no earlier step writes"):
        check_inputs(
            ["toxlens", "circuit", "--from", "runs/never-made"], [Path("runs/x")], tmp_path, "inline"
        )
