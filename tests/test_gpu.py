"""GPU checks (marker `gpu`, outside the default run; skipped without CUDA).

Fine-tuning picks the GPU by itself, trains in bf16 autocast where the GPU computes bf16
natively, and saves an fp32 model whose predictions reproduce the reported validation
metrics exactly on the GPU, and agree with the CPU's. Run with `pytest -m gpu`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import finetune_params

from automl.config import PreparedData, TrialContext
from automl.metrics import compute_metrics
from automl.modelio import load_model_dir, predict_logits

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("freeze_layers", [0, 1])  # 1: the frozen-prefix cache, on the GPU
def test_fine_tuning_trains_on_the_gpu_and_its_model_reproduces_there_and_on_the_cpu(
    tiny_backbone: Path,
    tiny_data: PreparedData,
    tmp_path: Path,
    monkeypatch: Any,
    freeze_layers: int,
) -> None:
    from automl import modelio
    from automl.trainers import finetune as ft

    monkeypatch.delenv(modelio.MIXED_PRECISION_ENV, raising=False)
    seen: list[tuple[str, Any]] = []  # (parameter device, head output dtype) per step
    step = ft._Run._step

    def spy(self: Any, ids: Any, batch: Any) -> float:
        device = next(self.model.parameters()).device.type
        hook = self.model.classifier.register_forward_hook(
            lambda m, i, o: seen.append((device, o.dtype))
        )
        try:
            return step(self, ids, batch)
        finally:
            hook.remove()

    monkeypatch.setattr(ft._Run, "_step", spy)
    ctx = TrialContext(output_dir=str(tmp_path / "best"), deadline=time.time() + 120, seed=0)
    params = finetune_params(tiny_backbone, epochs=3, freeze_layers=freeze_layers)
    results = ft.FineTuneTrainer().fit(tiny_data, params, ctx, lambda _: None)
    native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    assert results
    assert set(seen) == {("cuda", torch.bfloat16 if native_bf16 else torch.float32)}

    model, tokenizer, meta = load_model_dir(ctx.output_dir)
    assert meta.train_precision == ("bf16" if native_bf16 else "fp32")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    best = max(results, key=lambda r: r.metrics["macro_f1"])
    texts, labels = tiny_data.val.texts, tiny_data.val.labels
    gpu = predict_logits(model.to("cuda"), tokenizer, texts, meta.max_length)
    assert compute_metrics("classification", labels, gpu) == best.metrics
    cpu = predict_logits(model.to("cpu"), tokenizer, texts, meta.max_length)
    np.testing.assert_allclose(cpu, gpu, rtol=1e-4, atol=1e-4)
    assert (cpu.argmax(1) == gpu.argmax(1)).all()


def test_select_device_picks_the_gpu() -> None:
    from automl.modelio import select_device

    assert select_device().type == "cuda"
