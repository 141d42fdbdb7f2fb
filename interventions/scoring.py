"""Toxicity scorers for generated text.

**Scorers.** A scorer is a callable ``list[str] -> list[float]`` returning one toxicity probability in
``[0, 1]`` per text, with a ``name`` attribute. :func:`get_scorer` builds one from

* ``"profanity"`` (default): ``profanity_check.predict_prob`` from the PyPI package
  ``alt-profanity-check`` (a linear SVM on bag-of-words, shipped with the package: works offline);
* ``"better-profanity"``: ``better_profanity``'s ``contains_profanity`` (PyPI ``better-profanity``, MIT,
  its own shipped word list with leetspeak variants; offline). **Binary**: 1.0 when the text contains a
  listed word, else 0.0, so its expected maximum toxicity is a rate, not a mean probability. Its list is
  broad (it flags e.g. "God"), so expect false positives on benign text. Its words
  were never used to build toxlens's toxic-token set, lexicon token labels, localisation, edits or
  monitors (those use ``alt-profanity-check``), so it is an independent second opinion;
* ``"detoxify"`` / ``"detoxify-original"``, ``"detoxify-unbiased"``, ``"detoxify-multilingual"``: the
  ``"toxicity"`` output of the ``detoxify`` package. Its checkpoint is fetched by ``torch.hub`` into
  ``torch.hub.get_dir()/checkpoints`` and its base model's config and tokenizer come from the Hugging
  Face hub. With ``allow_download=False`` (default) both must already be cached, else a
  :class:`~lens.errors.ToxlensError` names the missing file at once (nothing touches the network);
* any callable: wrapped so that its outputs are checked.

Every scorer's output is validated: one value per input text, finite, within ``[0, 1]``. The empty
string is an ordinary input (scored as whatever the model says).

The statistics reported over scores (toxicity probability, expected maximum toxicity, dist-n) are in
:mod:`interventions.toxicity_stats`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError

# Detoxify variants: spec suffix → (detoxify model_type, checkpoint URL, Hugging Face base model).
# The URLs/base models are those of detoxify 0.5.x; the installed package's own table wins when present.
_DETOXIFY_RELEASES = "https://github.com/unitaryai/detoxify/releases/download/"
DETOXIFY_VARIANTS: dict[str, tuple[str, str, str]] = {
    "original": (
        "original",
        _DETOXIFY_RELEASES + "v0.1-alpha/toxic_original-c1212f89.ckpt",
        "bert-base-uncased",
    ),
    "unbiased": ("unbiased", _DETOXIFY_RELEASES + "v0.3-alpha/toxic_debiased-c7548aa0.ckpt", "roberta-base"),
    "multilingual": (
        "multilingual",
        _DETOXIFY_RELEASES + "v0.4-alpha/multilingual_debiased-0b549669.ckpt",
        "xlm-roberta-base",
    ),
}
SCORER_SPECS = ("profanity", "better-profanity", "detoxify", *(f"detoxify-{v}" for v in DETOXIFY_VARIANTS))


class Scorer:
    """A named ``list[str] -> list[float]`` whose every output is validated (see the module doc)."""

    def __init__(self, name: str, fn: Callable[[list[str]], Any]) -> None:
        self.name = name
        self._fn = fn

    def __repr__(self) -> str:
        return f"Scorer({self.name!r})"

    def __call__(self, texts: Sequence[str]) -> list[float]:
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ToxlensError(
                f"scorer {self.name!r}: texts must be strings, got {type(texts[bad[0]]).__name__} at index {bad[0]}"
            )
        if not texts:
            return []
        raw = self._fn(texts)
        try:
            values = [float(v) for v in raw]
        except (TypeError, ValueError) as err:
            raise ToxlensError(
                f"scorer {self.name!r} must return a sequence of numbers, got {type(raw).__name__} ({err})"
            ) from err
        if len(values) != len(texts):
            raise ToxlensError(
                f"scorer {self.name!r} returned {len(values)} scores for {len(texts)} texts; "
                "expected one score per text"
            )
        out = [i for i, v in enumerate(values) if not (math.isfinite(v) and 0.0 <= v <= 1.0)]
        if out:
            raise ToxlensError(
                f"scorer {self.name!r} returned {values[out[0]]!r} for text {out[0]}; "
                "expected a finite probability in [0, 1]"
            )
        return values


def get_scorer(
    spec: str | Callable[[list[str]], Any] = "profanity",
    allow_download: bool = False,
    device: str = "cpu",
    batch_size: int = 32,
) -> Scorer:
    """A validated scorer from a name in :data:`SCORER_SPECS` or a callable.

    ``device`` and ``batch_size`` apply to detoxify only (texts are scored ``batch_size`` at a time).
    """
    if callable(spec) and not isinstance(spec, str):
        if isinstance(spec, Scorer):
            return spec
        name = getattr(spec, "name", None) or getattr(spec, "__name__", None) or type(spec).__name__
        return Scorer(str(name), spec)
    if spec == "profanity":
        return _profanity_scorer()
    if spec == "better-profanity":
        return _better_profanity_scorer()
    if spec == "detoxify" or (isinstance(spec, str) and spec.startswith("detoxify-")):
        variant = "original" if spec == "detoxify" else spec.removeprefix("detoxify-")
        if variant in DETOXIFY_VARIANTS:
            if batch_size < 1:
                raise ToxlensError(f"batch_size must be >= 1, got {batch_size}")
            return _detoxify_scorer(variant, allow_download, device, batch_size)
    raise ToxlensError(f"unknown scorer {spec!r}; expected one of {list(SCORER_SPECS)} or a callable")


def _profanity_scorer() -> Scorer:
    try:
        module = importlib.import_module("profanity_check")
    except ImportError as err:
        raise ToxlensError(
            "scorer 'profanity' needs the package alt-profanity-check: pip install alt-profanity-check"
        ) from err

    def profanity(texts: list[str]) -> list[float]:
        return [float(v) for v in module.predict_prob(texts)]

    return Scorer("profanity", profanity)


def _better_profanity_scorer() -> Scorer:
    try:
        module = importlib.import_module("better_profanity")
    except ImportError as err:
        raise ToxlensError(
            "scorer 'better-profanity' needs the package better-profanity: pip install better-profanity==0.7.0"
        ) from err
    # a private instance with the shipped word list: words another caller adds to (or removes from)
    # the module-level `better_profanity.profanity` do not change this scorer
    checker = module.Profanity()
    checker.load_censor_words()

    def better_profanity(texts: list[str]) -> list[float]:
        return [1.0 if checker.contains_profanity(t) else 0.0 for t in texts]

    return Scorer("better-profanity", better_profanity)


def parse_scorers(spec: str) -> list[str]:
    """Scorer names from a comma list (``profanity,better-profanity``): the first is the headline; each
    must be a known name, none repeated."""
    names = [n.strip() for n in spec.split(",")]
    if not names or any(not n for n in names):
        raise ToxlensError(f"--scorer {spec!r}: expected comma-separated scorer names, e.g. profanity")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ToxlensError(f"--scorer {spec!r} names {dup} more than once")
    unknown = [n for n in names if n not in SCORER_SPECS]
    if unknown:
        raise ToxlensError(
            f"unknown scorer(s) {unknown} in --scorer {spec!r}; expected names among {list(SCORER_SPECS)}"
        )
    return names


def detoxify_checkpoint(variant: str) -> tuple[str, Path]:
    """(download URL, path where ``torch.hub`` caches it) of a detoxify variant's checkpoint."""
    import torch

    url = DETOXIFY_VARIANTS[variant][1]
    try:  # prefer the installed package's own table, in case a release renamed a file
        table = importlib.import_module("detoxify.detoxify").MODEL_URLS
        url = str(table.get(DETOXIFY_VARIANTS[variant][0], url))
    except (ImportError, AttributeError):
        pass
    return url, Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _cached_hf_dir(repo: str) -> Path | None:
    """Snapshot directory of ``repo`` in the local Hugging Face cache if it holds a config.json."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _detoxify_scorer(variant: str, allow_download: bool, device: str, batch_size: int) -> Scorer:
    if importlib.util.find_spec("detoxify") is None:
        raise ToxlensError(
            f"scorer 'detoxify-{variant}' needs the package detoxify: pip install 'toxlens[detoxify]' "
            "(or pip install detoxify)"
        )
    model_type, _, base = DETOXIFY_VARIANTS[variant]
    url, ckpt = detoxify_checkpoint(variant)
    kwargs: dict[str, Any] = {"device": device}
    if not allow_download:
        if not ckpt.is_file():
            raise ToxlensError(
                f"scorer 'detoxify-{variant}': checkpoint {str(ckpt)!r} is not cached and "
                f"allow_download=False; download {url} to that path (or pass allow_download=True)"
            )
        hf_dir = _cached_hf_dir(base)
        if hf_dir is None:
            raise ToxlensError(
                f"scorer 'detoxify-{variant}': the config/tokenizer of {base!r} are not in the local "
                f"Hugging Face cache and allow_download=False; fetch them once "
                f"(huggingface-cli download {base}) or pass allow_download=True"
            )
        kwargs["huggingface_config_path"] = str(hf_dir)
    from detoxify import Detoxify

    if (
        "huggingface_config_path" in kwargs
        and "huggingface_config_path" not in inspect.signature(Detoxify).parameters
    ):
        raise ToxlensError(
            "the installed detoxify cannot load offline (its Detoxify() has no huggingface_config_path); "
            "expected detoxify>=0.5.1, or pass allow_download=True"
        )
    model = Detoxify(model_type, **kwargs)

    def detoxify(texts: list[str]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(texts), batch_size):
            tox = model.predict(texts[start : start + batch_size])["toxicity"]
            out.extend(float(v) for v in (tox if isinstance(tox, (list, tuple)) else [tox]))
        return out

    return Scorer(f"detoxify-{variant}", detoxify)
