"""GPT-2's tokenizer, built offline from its BPE ranks (``gpt2.tiktoken``).

GPT-2's byte-level BPE ranks ship inside the ``openai-whisper`` sdist on PyPI as
``whisper/assets/gpt2.tiktoken`` (one ``base64(token bytes) rank`` line per token, ranks 0..50255 —
the same file tiktoken calls ``r50k_base``). ``scripts/setup.sh`` fetches it once into
``.venv/share/toxlens/gpt2.tiktoken``; ``TOXLENS_GPT2_BPE`` may point at another copy.

:func:`gpt2_tokenizer` turns the ranks into a Hugging Face fast tokenizer configured like the hub's
``gpt2`` tokenizer (byte-level pre-tokenizer with GPT-2's regex, no prefix space, no BOS/EOS added),
so ``tokenizer(text)["input_ids"]`` counts exactly as ``toxlens --model gpt2`` will. The merges are
derived from the ranks the way transformers' ``TikTokenConverter`` does (every split of a token into
two tokens is a merge, ordered by the merged token's rank). No network, no ``tiktoken`` package.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

# sha256 of r50k_base.tiktoken as pinned by tiktoken (tiktoken_ext/openai_public.py) — identical to
# whisper/assets/gpt2.tiktoken in openai-whisper==20250625.
GPT2_BPE_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_BPE_NAME = "gpt2.tiktoken"
ENDOFTEXT = "<|endoftext|>"
ENDOFTEXT_ID = 50256
REPO = Path(__file__).resolve().parents[1]


def bpe_candidates() -> list[Path]:
    """Where the rank file is looked for, in order."""
    out = []
    if os.environ.get("TOXLENS_GPT2_BPE"):
        out.append(Path(os.environ["TOXLENS_GPT2_BPE"]).expanduser())
    out.append(Path(sys.prefix) / "share" / "toxlens" / GPT2_BPE_NAME)
    out.append(REPO / ".venv" / "share" / "toxlens" / GPT2_BPE_NAME)
    return list(dict.fromkeys(p.resolve() for p in out))


def find_bpe_file() -> Path | None:
    return next((p for p in bpe_candidates() if p.is_file()), None)


def load_ranks(path: Path) -> dict[bytes, int]:
    """token bytes → rank; refuses a file that is not GPT-2's (checked by sha256)."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != GPT2_BPE_SHA256:
        raise ValueError(f"{path}: sha256 {digest} is not GPT-2's r50k ranks ({GPT2_BPE_SHA256})")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable-character map (as in its encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def gpt2_tokenizer(path: Path) -> Any:
    """A ``PreTrainedTokenizerFast`` equal to GPT-2's, built from the rank file at ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ranks = load_ranks(path)
    byte_map = _bytes_to_unicode()

    def as_str(token: bytes) -> str:
        return "".join(byte_map[b] for b in token)

    vocab = {as_str(tok): rank for tok, rank in ranks.items()}
    merges: list[tuple[int, int, int, str, str]] = []
    for tok, rank in ranks.items():
        for i in range(1, len(tok)):
            left, right = tok[:i], tok[i:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], as_str(left), as_str(right)))
    merges.sort()
    bpe = models.BPE(vocab=vocab, merges=[(m[3], m[4]) for m in merges], fuse_unk=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([ENDOFTEXT])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT
    )
