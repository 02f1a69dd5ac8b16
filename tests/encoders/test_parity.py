"""The exported graphs against their references: ONNX fp32 against the PyTorch model it was
traced from, and the int8 model against fp32 on real review texts."""

from __future__ import annotations

import numpy as np

from encoders.bench import cosines
from encoders.onnx_encoder import OnnxEncoder

MIXED = [
    "",
    "ok",
    "Great game, would buy again.",
    "Ein wirklich gutes Spiel mit einer packenden Geschichte und schöner Musik.",
    "Игра хорошая, но оптимизация ужасная, на моём ноутбуке постоянно падает FPS.",
    "非常好玩的游戏，强烈推荐给所有喜欢策略游戏的朋友们。",
    "このゲームは最高です！",
    "정말 재미있어요 👍",
    "لعبة رائعة جدا",
    "long review " * 200,   # truncated at max_tokens
]


def test_onnx_fp32_matches_pytorch(torch_encoder, fp32_encoder: OnnxEncoder,
                                   steam_sample: list[str]) -> None:
    texts = MIXED + steam_sample[:40]   # batches of many shapes, padding included
    reference = torch_encoder.encode(texts)
    exported = fp32_encoder.encode(texts)
    assert np.abs(exported - reference).max() <= 1e-4


def test_int8_close_to_fp32_on_steam_reviews(int8_encoder: OnnxEncoder, fp32_encoder: OnnxEncoder,
                                            steam_sample: list[str]) -> None:
    assert len(steam_sample) == 500
    c = cosines(int8_encoder.encode(steam_sample), fp32_encoder.encode(steam_sample))
    worst = int(np.argmin(c))
    assert c.min() >= 0.98, f"cosine {c[worst]:.4f} for {steam_sample[worst][:200]!r}"


def test_int8_close_to_fp32_on_odd_texts(int8_encoder: OnnxEncoder, fp32_encoder: OnnxEncoder) -> None:
    c = cosines(int8_encoder.encode(MIXED), fp32_encoder.encode(MIXED))
    assert c.min() >= 0.98


def test_int8_close_to_pytorch_fp32(torch_encoder, int8_encoder: OnnxEncoder,
                                    steam_sample: list[str]) -> None:
    """The figure the encoder benchmark reports: the CPU int8 model (pad-free batches)
    against the PyTorch fp32 model it was made from, on multilingual and review texts."""
    texts = MIXED + steam_sample[:150]
    c = cosines(int8_encoder.encode(texts), torch_encoder.encode(texts))
    worst = int(np.argmin(c))
    assert c.min() >= 0.98, f"cosine {c[worst]:.4f} for {texts[worst][:200]!r}"
    assert c.mean() >= 0.995


def test_cpu_encoder_batches_without_padding_and_keeps_order(fp32_encoder: OnnxEncoder,
                                                             int8_encoder: OnnxEncoder) -> None:
    """Pad-free batches regroup texts by token length; rows still come back in input order,
    and a text's vector does not depend on the other texts of the call."""
    assert fp32_encoder.batcher.exact_lengths and int8_encoder.batcher.exact_lengths
    texts = MIXED[::-1] + ["ok", "Great game, would buy again."]   # repeats of one length
    alone = np.concatenate([fp32_encoder.encode([t]) for t in texts])
    together = fp32_encoder.encode(texts)
    assert np.abs(together - alone).max() <= 1e-5
    c = cosines(int8_encoder.encode(texts), alone)
    assert c.min() >= 0.98
