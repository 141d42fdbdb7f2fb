"""Prompt/text file reading, and the evaluation-data script on synthetic rows (plus a Davidson smoke test)."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from pathlib import Path

import pytest

from lens.errors import ToxlensError
from lens.textfiles import read_prompts, read_texts

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_eval_data as med  # noqa: E402

DAVIDSON = ROOT.parent / "shared/data/davidson/labeled_data.csv"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8", newline="")
    return p


# -- read_prompts / read_texts ----------------------------------------------------------------


def test_txt_lines(tmp_path: Path) -> None:
    p = write(tmp_path, "p.txt", "first prompt\n\n  \r\nsecond  \r\n\tthird has\u2028a line separator\nlast")
    expected = ["first prompt", "second  ", "\tthird has\u2028a line separator", "last"]
    assert read_prompts(p) == expected
    assert read_texts(str(p)) == expected


def test_jsonl_fields(tmp_path: Path) -> None:
    lines = [
        json.dumps({"prompt": "a b", "text": "t1", "id": 1}),
        "",
        json.dumps({"prompt": " c\nd", "text": "t2"}),
    ]
    p = write(tmp_path, "p.jsonl", "\n".join(lines) + "\n")
    assert read_prompts(p) == ["a b", " c\nd"]
    assert read_texts(p) == ["t1", "t2"]


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("p.csv", "a\n", r"unsupported file type '\.csv'"),
        ("p.txt", "", r"p\.txt: no items found; expected at least one non-blank line"),
        ("p.txt", "\n \n\t\n", "no items found"),
        ("p.jsonl", "\n\n", "no items found; expected at least one JSON object with a 'prompt' field"),
        ("p.jsonl", '{"prompt": "ok"}\n{"prompt": "x"\n', r"p\.jsonl:2: invalid JSON"),
        ("p.jsonl", '{"prompt": "ok"}\n\n["x"]\n', r"p\.jsonl:3: expected a JSON object, got list"),
        ("p.jsonl", '{"text": "ok"}\n', r"p\.jsonl:1: missing field 'prompt'; object has \['text'\]"),
        ("p.jsonl", '{"prompt": 3}\n', r"p\.jsonl:1: field 'prompt' must be a non-empty string, got 3"),
        ("p.jsonl", '{"prompt": "  "}\n', r"p\.jsonl:1: field 'prompt' must be a non-empty string"),
        ("p.txt", b"ok\n\xff\xfe bad\n", "not valid UTF-8"),
    ],
)
def test_bad_prompt_files(tmp_path: Path, name: str, content: str | bytes, match: str) -> None:
    p = write(tmp_path, name, content)
    with pytest.raises(ToxlensError, match=match):
        read_prompts(p)


def test_missing_file_and_text_field(tmp_path: Path) -> None:
    with pytest.raises(ToxlensError, match="does not exist"):
        read_prompts(tmp_path / "nope.txt")
    p = write(tmp_path, "t.jsonl", '{"prompt": "a"}\n')
    with pytest.raises(ToxlensError, match=r"t\.jsonl:1: missing field 'text'"):
        read_texts(p)


# -- make_eval_data -----------------------------------------------------------------------------


def test_clean_tweet() -> None:
    c = med.clean_tweet
    assert (
        c("!!! RT @some_user: Hello &amp; welcome http://t.co/AbC1 #tag &#128514;&#128514;")
        == "Hello & welcome #tag"
    )
    assert c("&#8220;Quoted&#8221; caf&#233; &#x41;&#55357;&#56834; &lt;3") == "“Quoted” café A <3"
    assert (
        c("good point RT @a: and more\n\nlines   here www.example.com/x") == "good point and more lines here"
    )
    assert c("@a @b: !!RT: ok") == "ok"
    assert c("RT @a RT @b: @c") == ""
    assert c("ART and RTX stay") == "ART and RTX stay"
    assert c("wow!!! such words") == "wow!!! such words"


def rows(*items: tuple[str, str]) -> list[dict[str, str]]:
    return [{"tweet": t, "class": c} for t, c in items]


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def test_make_prompts_lengths_and_filters() -> None:
    data = rows(
        (words(7, "a"), "1"),  # too short after cleaning: dropped
        ("@user " + words(8, "b"), "1"),  # 8 words → 4
        (words(11, "c"), "1"),  # 11 // 2 = 5
        (words(30, "d"), "1"),  # capped at 12
        (words(10, "e"), "2"),  # other class
        (words(10, "f"), "0"),
        (words(11, "c"), " 1"),  # duplicate prompt: kept once
    )
    got = med.make_prompts(data, n=3, seed=0)
    assert sorted(got) == sorted([words(4, "b"), words(5, "c"), words(12, "d")])
    assert med.make_prompts(data, n=3, seed=0) == got
    orders = {tuple(med.make_prompts(data, n=3, seed=s)) for s in range(10)}
    assert len(orders) > 1  # the seed drives the shuffle
    assert med.make_prompts(data, n=1, seed=0, min_words=30) == [words(12, "d")]
    assert med.make_prompts(data, n=1, seed=0, min_words=30, max_prompt_words=20) == [words(15, "d")]
    with pytest.raises(ToxlensError, match="asked for 4 prompts, but 3 distinct eligible ones exist"):
        med.make_prompts(data, n=4)
    with pytest.raises(ToxlensError, match="min_prompt_words"):
        med.make_prompts(data, n=1, min_words=4, min_prompt_words=4)


def test_make_neutral() -> None:
    data = rows(
        (words(4, "a"), "2"),  # below neutral_min_words=5
        ("RT @x: " + words(5, "b") + "\nmore", "2"),
        (words(6, "c"), "2"),
        (words(9, "d"), "1"),
    )
    got = med.make_neutral(data, n=2, seed=3)
    assert sorted(got) == sorted([words(5, "b") + " more", words(6, "c")])
    assert sorted(med.make_neutral(data, n=3, min_words=4)) == sorted([words(4, "a"), *got])
    with pytest.raises(ToxlensError, match="asked for 3 neutral texts"):
        med.make_neutral(data, n=3)


def synthetic_csv(path: Path) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "count", "class", "tweet"])
        for i in range(12):
            w.writerow([i, 3, "1", f"RT @u{i}: " + words(8 + i, f"p{i}x") + " http://t.co/z"])
            w.writerow([100 + i, 3, "2", words(5 + i, f"n{i}x") + "\n&amp; fine"])
    return path


def test_script_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = synthetic_csv(tmp_path / "data.csv")
    out = tmp_path / "eval"
    argv = ["--csv", str(src), "--out", str(out), "--n-prompts", "5", "--n-neutral", "4", "--seed", "1"]
    assert med.main(argv) == 0
    prompts, neutral = read_prompts(out / "prompts.jsonl"), read_texts(out / "neutral.txt")
    assert len(prompts) == 5 and len(neutral) == 4
    for p in prompts:
        i = int(re.match(r"p(\d+)x0", p).group(1))  # type: ignore[union-attr]
        assert p == words(min((8 + i) // 2, 12), f"p{i}x")
    assert all(t.endswith(" & fine") and "\n" not in t for t in neutral)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert (manifest["n_prompts"], manifest["n_neutral"], manifest["seed"]) == (5, 4, 1)
    assert (manifest["eligible_prompts"], manifest["eligible_neutral"], manifest["source_rows"]) == (
        12,
        12,
        24,
    )
    assert manifest["cleaning_rules"] == med.CLEANING_RULES
    # same seed, same files; an existing output is refused without --overwrite
    assert med.main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert med.main([*argv, "--overwrite"]) == 0
    assert read_prompts(out / "prompts.jsonl") == prompts


def test_script_missing_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert med.main(["--csv", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.csv" in err and "not found" in err
    assert not (tmp_path / "o").exists()
    bad = write(tmp_path, "bad.csv", "text,label\nhello,1\n")
    assert med.main(["--csv", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.csv:1: missing column(s) ['class', 'tweet']" in capsys.readouterr().err


def test_davidson_smoke() -> None:
    if not DAVIDSON.is_file():
        pytest.skip(f"Davidson data not present at {DAVIDSON}")
    data = med.read_rows(DAVIDSON)
    prompts = med.make_prompts(data, n=100, seed=0)
    neutral = med.make_neutral(data, n=200, seed=0)
    assert len(set(prompts)) == 100 and len(set(neutral)) == 200
    assert all(4 <= len(p.split()) <= 12 for p in prompts)
    for t in prompts + neutral:
        assert t == t.strip() and "\n" not in t and not re.search(r"@\w|https?://|&#\d|&amp;", t), t
        assert not t.startswith(("!", "RT ")), t


def test_text_source_reads_files_and_datasets_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from lens.textfiles import read_text_source

    f = tmp_path / "n.txt"
    f.write_text("one\ntwo\nthree\n")
    assert read_text_source(str(f), limit=2) == ["one", "two"]
    calls: list[tuple[str, str | None, str]] = []

    class FakeDataset:
        def __init__(self) -> None:
            self.column_names = ["text", "label"]

        def __getitem__(self, column: str) -> list[object]:
            return ["a", "", "  ", "b", None, "c"]

    def load_dataset(path: str, config: str | None = None, split: str = "") -> FakeDataset:
        calls.append((path, config, split))
        if split == "missing":
            raise ValueError("Unknown split 'missing'")
        return FakeDataset()

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert read_text_source("hf:wikitext#wikitext-2-raw-v1:test") == ["a", "b", "c"]
    assert read_text_source("hf:allenai/c4:validation:text", limit=1) == ["a"]
    assert calls == [("wikitext", "wikitext-2-raw-v1", "test"), ("allenai/c4", None, "validation")]
    with pytest.raises(ToxlensError, match="no column 'body'"):
        read_text_source("hf:x:test:body")
    with pytest.raises(ToxlensError, match=r"could not load dataset 'x'.*Unknown split"):
        read_text_source("hf:x:missing")
    with pytest.raises(ToxlensError, match="expected 'hf:NAME"):
        read_text_source("hf:onlyname")
