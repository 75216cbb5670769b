"""Frozen-prefix cache for fine-tuning: the frozen embeddings and bottom k layers of an
encoder run once per text, and later epochs and evaluations run only the top layers.

With the bottom frozen and in eval mode (no dropout) and no augmentation, the hidden
states after layer k are a fixed function of each text. The cache fills lazily: the
first epoch runs the whole model as before (the bottom under no_grad) and keeps each
training text's hidden states, cut to its own length; later epochs pad those per batch
and run the top layers. Evaluation keys the bottom's output by the batch's token ids, so
`predict_logits` itself drives it with its own batching and padding: reported metrics
are bit-for-bit those of the full model (and of the saved folder).

The top runs through the model's own forward, with the embeddings module swapped for
one that replays the cached states and the encoder's layer list cut to the top layers:
the model builds its attention mask, pooler, dropout and head exactly as usual.
Only BERT is supported (MPNet's relative position bias is shared by all layers and is
trained, so its bottom layers are not a fixed function; others are untested).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["PrefixCache"]

MAX_CACHE_BYTES = 2 * 1024**3  # fp32 hidden states of train + val texts, estimated
_SUPPORTED = ("bert",)  # config.model_type values whose forward the swap is checked for


class _Replay(nn.Module):
    """Stands in for the embeddings module: returns the hidden states it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.value: torch.Tensor | None = None

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.value is None:
            raise RuntimeError("no cached hidden states to replay")
        return self.value


class _CachedEval(nn.Module):
    """The model as `predict_logits` sees it, running the bottom once per batch."""

    def __init__(self, cache: PrefixCache) -> None:
        super().__init__()
        self.inner = cache.model
        self._cache = cache

    @property
    def config(self) -> Any:
        return self.inner.config

    def forward(self, **inputs: torch.Tensor) -> Any:
        return self._cache.eval_forward(inputs)


class PrefixCache:
    """Cached outputs of a model's frozen bottom (embeddings + k layers); see the module
    docstring. `train_logits` serves training steps, `eval_model` stands in for the model
    in `predict_logits`."""

    def __init__(self, model: Any, k: int, n_train: int) -> None:
        self.model = model
        self.base: Any = model.base_model
        self.embeddings: nn.Module = self.base.embeddings
        self.layers: nn.ModuleList = self.base.encoder.layer
        self.bottom = nn.ModuleList(list(self.layers[:k]))
        self.top = nn.ModuleList(list(self.layers[k:]))
        self.replay = _Replay()
        self.train_states: list[torch.Tensor | None] = [None] * n_train
        self.val_states: dict[tuple[tuple[int, ...], bytes], torch.Tensor] = {}
        self.eval_model = _CachedEval(self)

    @classmethod
    def create(
        cls, model: nn.Module, tokenizer: Any, k: int, train_lengths: list[int], n_val: int
    ) -> PrefixCache | None:
        """A cache for `model` with its bottom k layers frozen, or None (logged) when k is
        0, the architecture is unsupported, or the states would take over MAX_CACHE_BYTES."""
        if k <= 0:
            return None
        config: Any = getattr(model, "config", None)
        model_type = getattr(config, "model_type", None)
        encoder = getattr(getattr(model, "base_model", None), "encoder", None)
        layers = getattr(encoder, "layer", None)
        if (
            model_type not in _SUPPORTED
            or type(model).__name__ != "BertForSequenceClassification"
            or getattr(config, "is_decoder", False)
            or getattr(tokenizer, "padding_side", "right") != "right"
            or not isinstance(layers, nn.ModuleList)
        ):
            logger.debug("frozen-prefix cache off: %s is not supported", type(model).__name__)
            return None
        tokens = sum(train_lengths) + n_val * sum(train_lengths) / max(len(train_lengths), 1)
        size = tokens * int(config.hidden_size) * 4
        if size > MAX_CACHE_BYTES:
            logger.info(
                "frozen-prefix cache off: %.2f GB of hidden states would exceed %.2f GB; "
                "training the whole model each epoch",
                size / 1e9,
                MAX_CACHE_BYTES / 1e9,
            )
            return None
        logger.debug("frozen-prefix cache on: %d frozen layers, about %.0f MB", k, size / 1e6)
        return cls(model, k, len(train_lengths))

    @contextmanager
    def _swapped(self, embeddings: nn.Module, layers: nn.ModuleList) -> Iterator[None]:
        """Temporarily replace the base model's embeddings module and layer list."""
        self.base.embeddings, self.base.encoder.layer = embeddings, layers
        try:
            yield
        finally:
            self.base.embeddings, self.base.encoder.layer = self.embeddings, self.layers

    def _bottom(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Hidden states after the frozen layers (the caller picks the grad mode)."""
        with self._swapped(self.embeddings, self.bottom):
            return self.base(**inputs).last_hidden_state

    def _top(self, hidden: torch.Tensor, inputs: dict[str, torch.Tensor]) -> Any:
        """The model's output, running only the top layers from `hidden`."""
        self.replay.value = hidden
        try:
            with self._swapped(self.replay, self.top):
                return self.model(**inputs)
        finally:
            self.replay.value = None

    def train_logits(
        self, batch: list[int], input_ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits for training rows `batch` (right-padded input_ids and mask): from the
        cache when every row is cached, else running (and caching) the bottom."""
        inputs = {"input_ids": input_ids, "attention_mask": mask}
        states = [self.train_states[i] for i in batch]
        if any(s is None for s in states):
            with torch.no_grad():
                hidden = self._bottom(inputs)
            lengths = mask.sum(dim=1).tolist()
            for row, i in enumerate(batch):
                if self.train_states[i] is None:
                    self.train_states[i] = hidden[row, : int(lengths[row])].clone()
        else:
            cached = [s for s in states if s is not None]
            hidden = nn.utils.rnn.pad_sequence(cached, batch_first=True)
        return self._top(hidden, inputs).logits

    def eval_forward(self, inputs: dict[str, torch.Tensor]) -> Any:
        """The model's output on one evaluation batch, the bottom run once per batch."""
        ids = inputs["input_ids"]
        key = (tuple(ids.shape), hashlib.sha1(ids.cpu().numpy().tobytes()).digest())
        hidden = self.val_states.get(key)
        if hidden is None:
            hidden = self.val_states[key] = self._bottom(inputs)
        return self._top(hidden, inputs)
