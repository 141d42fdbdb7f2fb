"""Shared fixtures (kept small; test modules may import ``tests/tiny.py`` directly)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny import tiny

from lens.model import LensModel

# The test models are tiny: one intra-op thread is fastest, and avoids the spin-wait slowdowns
# (10-100x) that several threads cause on a shared, busy CPU.
torch.set_num_threads(1)


@pytest.fixture
def tiny_pair(tmp_path: Path) -> Callable[..., tuple[LensModel, Any]]:
    """Factory: ``tiny_pair(kind, seed=0, n_layers=3)`` → (LensModel, untouched HF copy), fresh each call."""
    counter = iter(range(1_000_000))

    def make(kind: str, seed: int = 0, n_layers: int = 3) -> tuple[LensModel, Any]:
        return tiny(kind, tmp_path / f"tiny-{kind}-{next(counter)}", seed, n_layers)

    return make
