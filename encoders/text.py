"""Turning arbitrary user text into padded token batches. Shared by the ONNX runtime and
the PyTorch reference so both see exactly the same inputs (parity and benchmark rely on it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoders.base import EncoderInputError

E5_PREFIX = "query: "
# A token covers at least one character in practice; 16 characters per token leaves a wide
# margin while keeping the tokenizer's work bounded for megabyte-sized inputs.
CHARS_PER_TOKEN_BUDGET = 16
# (texts, tokens) per model call: CPU throughput peaks with cache-sized batches, the GPU
# wants large ones. Every engine on a device uses the same limits so benchmarks compare
# like with like, except the CPU's pad-free batches (one token length per batch, see
# `TextBatcher.batches`), which are capped lower: a batch of 1,024 tokens keeps a layer's
# activations near the core's L2 cache. (PyTorch, padded, was 16% faster with 1,024 at one
# thread and 16% slower at two; it keeps 4,096, the limit its reference figures used.)
BATCH_LIMITS = {"cpu": (32, 4096), "cuda": (256, 65536)}
PAD_FREE_CPU_LIMITS = (16, 1024)


def clean_text(text: object, index: int = 0) -> str:
    """Validate one input and make it safe for the tokenizer.

    Lone UTF-16 surrogates (which cannot be UTF-8 encoded) become U+FFFD; valid surrogate
    pairs are joined. Anything that is not a `str` is refused with a message naming it.
    """
    if not isinstance(text, str):
        raise EncoderInputError(
            f"texts[{index}] is {type(text).__name__}, expected str")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


@dataclass(frozen=True)
class Batch:
    """One padded model input and the positions of its rows in the caller's list."""

    indices: np.ndarray         # int64 [b]: original positions
    input_ids: np.ndarray       # int64 [b, L]
    attention_mask: np.ndarray  # int64 [b, L]


class TextBatcher:
    """Tokenises with a `tokenizer.json`, truncates at `max_tokens` (special tokens included),
    and yields length-sorted batches so padding stays small; with `exact_lengths` every batch
    holds texts of one token length, so no padding is computed at all."""

    def __init__(self, tokenizer_path: Path, max_tokens: int = 256, prefix: str = E5_PREFIX,
                 batch_size: int = BATCH_LIMITS["cpu"][0],
                 max_batch_tokens: int = BATCH_LIMITS["cpu"][1], exact_lengths: bool = False) -> None:
        from tokenizers import Tokenizer

        if max_tokens < 8:
            raise ValueError(f"max_tokens must be >= 8, got {max_tokens}")
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.max_tokens = max_tokens
        self.prefix = prefix
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.exact_lengths = exact_lengths
        self.pad_id = self.tokenizer.token_to_id("<pad>")
        if self.pad_id is None:
            self.pad_id = 0

    def prepare(self, texts: Sequence[str]) -> list[str]:
        """Validate, repair and cap each text, then add the model's prefix."""
        if isinstance(texts, (str, bytes)):
            raise EncoderInputError("texts must be a sequence of str, not a single "
                                    f"{type(texts).__name__}; wrap it in a list")
        budget = self.max_tokens * CHARS_PER_TOKEN_BUDGET
        out = []
        for i, text in enumerate(texts):
            text = clean_text(text, i)
            if len(text) > budget:
                # Whitespace runs count as one space for the tokenizer, so collapse them
                # before cutting: a text padded with spaces keeps its words.
                text = " ".join(text.split())[:budget]
            out.append(self.prefix + text)
        return out

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, special tokens included, at most `max_tokens` each."""
        return [enc.ids for enc in self.tokenizer.encode_batch(self.prepare(texts))]

    def batches(self, ids: list[list[int]]) -> Iterator[Batch]:
        """Group texts of similar length, longest first, within both batch limits; with
        `exact_lengths`, a batch never mixes lengths (possibly one text per batch).

        Pad-free batches are what makes the CPU int8 model fast: besides skipping the padded
        positions, small batches keep activations in cache, and a text's int8 vector no
        longer depends on the padding that its neighbours in the batch brought (dynamic
        quantisation takes its range from the whole batch, pads included)."""
        order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
        start = 0
        while start < len(order):
            longest = len(ids[order[start]])
            size = max(1, min(self.batch_size, self.max_batch_tokens // max(longest, 1)))
            if self.exact_lengths:
                end = min(start + size, len(order))
                size = next((k for k in range(1, end - start) if len(ids[order[start + k]]) != longest),
                            end - start)
            chosen = order[start:start + size]
            start += size
            input_ids = np.full((len(chosen), longest), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(chosen), longest), dtype=np.int64)
            for row, i in enumerate(chosen):
                n = len(ids[i])
                input_ids[row, :n] = ids[i]
                mask[row, :n] = 1
            yield Batch(np.asarray(chosen, dtype=np.int64), input_ids, mask)

    def embed(self, texts: Sequence[str], dim: int, run: Callable[[Batch], np.ndarray]) -> np.ndarray:
        """Tokenise, batch and run every batch through `run` (one model call); rows come
        back in input order. The one loop that every engine (ONNX, PyTorch) shares."""
        ids = self.tokenize(texts)
        out = np.zeros((len(ids), dim), dtype=np.float32)
        for batch in self.batches(ids):
            out[batch.indices] = run(batch)
        return out
