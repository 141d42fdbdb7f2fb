"""Tiny, seeded, offline models and a word-level tokenizer for the unit tests (nothing downloads)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lens.loading import from_hf
from lens.model import LensModel

# Neutral filler words plus two "toxic" and two "benign" marker words. Nothing offensive is needed:
# the toxic token set in tests is given by a word file that names the marker words.
WORDS = [
    "the",
    "a",
    "you",
    "are",
    "is",
    "was",
    "this",
    "that",
    "my",
    "your",
    "so",
    "very",
    "really",
    "just",
    "what",
    "he",
    "she",
    "they",
    "we",
    "it",
    "and",
    "or",
    "but",
    "not",
    "to",
    "of",
    "in",
    "on",
    "at",
    "for",
    "with",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "red",
    "blue",
    "green",
    "cat",
    "dog",
    "sun",
    "moon",
    "tree",
    "car",
    "book",
    "house",
    "idiot",
    "jerk",
    "friend",
    "pal",
]
SPECIALS = ["<unk>", "<bos>", "<eos>"]
TOXIC_WORDS = ["idiot", "jerk"]
BENIGN_WORDS = ["friend", "pal"]


def make_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    )
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))
    loaded: PreTrainedTokenizerFast = PreTrainedTokenizerFast.from_pretrained(str(directory))
    return loaded


def vocab_size() -> int:
    return len(SPECIALS) + len(WORDS)


def hf_model(kind: str, seed: int = 0, n_layers: int = 3) -> Any:
    torch.manual_seed(seed)
    if kind == "gpt2":
        cfg = GPT2Config(
            vocab_size=vocab_size(),
            n_embd=32,
            n_layer=n_layers,
            n_head=4,
            n_positions=64,
            attn_implementation="eager",
            bos_token_id=1,
            eos_token_id=2,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        model = GPT2LMHeadModel(cfg)
    elif kind == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab_size(),
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=n_layers,
            num_attention_heads=6,
            num_key_value_heads=2,
            max_position_embeddings=64,
            attn_implementation="eager",
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=None,
        )
        model = LlamaForCausalLM(cfg)
    else:
        raise ValueError(kind)
    # Larger random weights than the default init so that every component matters a little.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(4.0)
    return model.eval()


def tiny(kind: str, tmp: Path, seed: int = 0, n_layers: int = 3) -> tuple[LensModel, Any]:
    """(LensModel, untouched HF reference copy with the same weights)."""
    tok = make_tokenizer(tmp / "tok")
    model = hf_model(kind, seed, n_layers)
    reference = copy.deepcopy(model)
    return from_hf(model, tok, f"tiny-{kind}"), reference
