"""Default fine-tuning: MiniLM-L6 with a classification head, `transformers.Trainer`
defaults (AdamW, lr 5e-5, 3 epochs, batch 8, linear decay, no warmup), texts truncated at
256 tokens (the length the model was trained on) and padded per batch. A callback ends
training when the next step would pass the budget: the model so far is used."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from automl.bench.systems.base import BACKBONE, FitTask, Fitted, label_ids

MAX_LENGTH = 256
PREDICT_BATCH = 64


def fit(task: FitTask) -> Fitted:
    task.require("text", "finetune-default")
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from automl.backbones import resolve
    from automl.bench.systems._hf import StopAtDeadline
    from automl.modelio import quiet_transformers

    quiet_transformers()
    path = str(resolve(BACKBONE))
    classes, y = label_ids(task.labels)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(classes), local_files_only=True
    )
    encoded = tokenizer(list(task.texts), truncation=True, max_length=MAX_LENGTH)
    rows = [{**{k: v[i] for k, v in encoded.items()}, "labels": int(y[i])} for i in range(len(y))]
    stop = StopAtDeadline(task.deadline)
    args = TrainingArguments(
        output_dir=str(Path(task.workdir) / "scratch" / "finetune"),
        learning_rate=5e-5,
        num_train_epochs=3,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=task.seed,
    )
    Trainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[stop],
    ).train()
    model.eval()

    def predict(texts: Sequence[str]) -> list[str]:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding
        out = [""] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(order), PREDICT_BATCH):
                idx = order[start : start + PREDICT_BATCH]
                batch = tokenizer(
                    [texts[i] for i in idx],
                    truncation=True,
                    max_length=MAX_LENGTH,
                    padding=True,
                    return_tensors="pt",
                )
                for i, c in zip(idx, model(**batch).logits.argmax(-1).tolist(), strict=True):
                    out[i] = classes[c]
        return out

    return Fitted(predict, stop.info())
