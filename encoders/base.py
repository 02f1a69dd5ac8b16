"""The one small interface every text encoder speaks, so the worker, the ranking code and
the evaluation harness can swap implementations (ONNX, PyTorch, a test fake) freely."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Encoder(Protocol):
    """Maps texts to L2-normalised float32 vectors in one shared space."""

    @property
    def name(self) -> str:
        """Stable identifier of the model and variant (vectors of different names don't mix)."""
        ...

    @property
    def dim(self) -> int:
        """Vector dimension d."""
        ...

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return a C-contiguous float32 array [len(texts), dim], each row of unit L2 norm."""
        ...


class EncoderError(Exception):
    """Base of every failure the encoders package raises itself (bad input, device, model
    source, export); the worker dead-letters a message that hits one as `encoder_error`."""


class EncoderInputError(EncoderError, ValueError):
    """A text the encoder cannot embed (wrong type); the message says which and why."""
