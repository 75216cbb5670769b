"""Word-level text augmentation for training texts (never validation or test texts).

Every function is deterministic given its random generator: a `random.Random` or a
`numpy.random.Generator`. Strength 0 returns the text unchanged.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

from automl.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["AUGMENT_METHODS", "augment_batch", "random_delete_swap", "span_mask"]

AUGMENT_METHODS = ("none", "delete_swap", "mask")

# Spans of 1-3 words: long enough to hide a phrase, short enough to keep some context.
_MAX_SPAN = 3


def _uniform(rng: Any) -> float:
    """A float in [0, 1) from either kind of generator."""
    return float(rng.random())


def _randint(rng: Any, n: int) -> int:
    """An int in [0, n) from either kind of generator."""
    if isinstance(rng, random.Random):
        return rng.randrange(n)
    return int(rng.integers(n))


def _stochastic_round(x: float, rng: Any) -> int:
    """floor(x), plus one with probability frac(x): short texts still get augmented on
    average (0.3 expected swaps means a swap 30% of the time, not never)."""
    base = int(x)
    return base + (1 if _uniform(rng) < x - base else 0)


def random_delete_swap(text: str, strength: float, rng: Any) -> str:
    """Delete each word with probability strength/2, then swap about strength*len/2
    random word pairs. At least one word is always kept."""
    words = text.split()
    if strength <= 0 or not words:
        return text
    p_delete = min(strength, 1.0) / 2
    kept = [w for w in words if _uniform(rng) >= p_delete]
    if not kept:
        kept = [words[_randint(rng, len(words))]]
    n = len(kept)
    if n > 1:
        for _ in range(_stochastic_round(strength * n / 2, rng)):
            i = _randint(rng, n)
            # Half the swaps are adjacent (local word-order noise), half between any two words.
            if _uniform(rng) < 0.5:
                j = i + 1 if i + 1 < n else i - 1
            else:
                j = _randint(rng, n)
            kept[i], kept[j] = kept[j], kept[i]
    return " ".join(kept)


def span_mask(text: str, strength: float, rng: Any, mask_token: str) -> str:
    """Replace random contiguous spans of 1-3 words, covering about `strength` of the
    words, with `mask_token` (one mask token per hidden word). At least one word of a
    text stays unmasked; a one-word text is returned unchanged."""
    words = text.split()
    n = len(words)
    if strength <= 0 or n < 2:
        return text
    target = min(_stochastic_round(min(strength, 1.0) * n, rng), n - 1)
    masked = [False] * n
    count = 0
    attempts = 0
    while count < target and attempts < 10 * n:
        attempts += 1
        span = min(1 + _randint(rng, _MAX_SPAN), target - count)
        start = _randint(rng, n - span + 1)
        for k in range(start, start + span):
            if not masked[k]:
                masked[k] = True
                count += 1
    return " ".join(mask_token if m else w for w, m in zip(words, masked, strict=True))


def augment_batch(
    texts: Sequence[str],
    method: str,
    strength: float,
    rng: Any,
    mask_token: str | None = None,
) -> list[str]:
    """Augment every text with `method` ("none", "delete_swap" or "mask")."""
    if method not in AUGMENT_METHODS:
        raise ConfigError(
            f"augment method {method!r} is unknown: expected one of {', '.join(AUGMENT_METHODS)}"
        )
    if method == "none" or strength <= 0:
        return list(texts)
    if method == "delete_swap":
        return [random_delete_swap(t, strength, rng) for t in texts]
    if not mask_token:
        raise ConfigError(
            "augment method 'mask' needs the tokenizer's mask token, but it has none: "
            "use augment: delete_swap for this backbone"
        )
    return [span_mask(t, strength, rng, mask_token) for t in texts]
