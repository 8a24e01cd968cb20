"""Non-learned (or less learned) baselines for cecq's compressor, compared at equal bytes
per document: percentile quantization of one base model, PCA of the concatenation, the
plain MRL recipe (random initialisation), and sentence-transformers' binary quantization
with float rescoring. Like cecq itself, every baseline is fitted on the corpus only."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from cecq.config import DecoderConfig, EvalConfig
from cecq.decoder import Decoder, decode, train_decoder, trimmed
from cecq.encoders import Encoder, l2_normalize, nonempty_rows
from cecq.errors import ConfigError
from cecq.quantization import CodeQuantizer, Quantizer, fit_quantizer, quantizer_class, quantizer_kinds
from cecq.search import rescore_signs, search_codes, search_hamming

logger = logging.getLogger(__name__)

# Candidates a binary search hands to float rescoring, per result wanted (sentence-transformers'
# documented recipe; the functions' own default is 2).
RESCORE_MULTIPLIER = 4
ALLOCATION_ROWS = 20_000  # calibration rows for fitting per-dimension bits


@dataclass
class BaselineResult:
    """One scored baseline configuration: a ranked result and what it stores per document."""

    name: str
    scoring: str  # float | symmetric | asymmetric
    scores: np.ndarray
    indices: np.ndarray
    bytes_per_doc: int
    dims: int | None = None
    bits: int | None = None
    method: str | None = None  # the name's family: pq-<model>, pca, mrl, st-binary-<model>
    quantization: str | None = None
    budget_bytes: int | None = None
    fixed_bytes: int = 0  # what the index stores once (quantizer, projection), not per document


def stored_bytes(quantizer: CodeQuantizer) -> int:
    """The size of the quantizer's file as cecq stores it (codebooks, rotation, thresholds)."""
    buf = io.BytesIO()
    quantizer.save(buf)
    return len(buf.getvalue())


def fit_rows(fit: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """The rows of ``x`` that fit things: the non-empty rows, within the ``fit`` mask if given."""
    keep = nonempty_rows(x)
    return x[keep if fit is None else keep & fit]


def quantized_search(
    doc_vecs: np.ndarray,
    query_vecs: np.ndarray,
    bits: int | None,
    k: int,
    scorings: Sequence[str] = ("symmetric", "asymmetric"),
    rescore: int = 0,
    empty: np.ndarray | None = None,
    quantizer: CodeQuantizer | None = None,
    fit: np.ndarray | None = None,
    sink: list[bytes] | None = None,
    coded: int | None = None,
    codes_sink: list[bytes] | None = None,
) -> Iterator[tuple[str, np.ndarray, np.ndarray, int, int]]:
    """Percentile-quantize float document vectors (thresholds fitted on the non-zero rows) and
    search them with each scoring: yields ``(scoring, scores, indices, bytes_per_doc, quantizer
    file bytes)``. ``fit`` (a row mask) limits the rows the thresholds are fitted on; only the
    first ``coded`` rows (default: all) are coded and searched, the others (another corpus's
    documents) only fit. ``sink`` receives the quantizer file's bytes, ``codes_sink`` the codes'.
    ``empty`` (default: the zero rows) flags documents that score 0.
    ``rescore`` > 0 re-ranks that many top candidates with ``doc_vecs`` themselves.
    ``quantizer``, when given, is used instead of fitting one of ``bits`` bits.
    This is cecq's own quantize-and-search step; the baselines differ only in the vectors."""
    if quantizer is None:
        quantizer = Quantizer.fit(fit_rows(fit, doc_vecs), bits)
    empty = ~nonempty_rows(doc_vecs) if empty is None else np.asarray(empty, dtype=bool)
    doc_vecs, empty = doc_vecs[:coded], empty[:coded]
    packed = quantizer.quantize(doc_vecs)
    fixed = stored_bytes(quantizer)
    if sink is not None:
        buf = io.BytesIO()
        quantizer.save(buf)
        sink.append(buf.getvalue())
    if codes_sink is not None:
        codes_sink.append(np.ascontiguousarray(packed).tobytes())
    kwargs = {"rescore_vectors": doc_vecs, "rescore_k": rescore} if rescore else {}
    for scoring in scorings:
        s, i = search_codes(query_vecs, packed, quantizer, k, scoring, empty=empty, **kwargs)
        yield scoring, s, i, quantizer.bytes_per_vector, fixed


def budget_quantizers(
    vectors: Callable[[int, type[CodeQuantizer]], tuple[np.ndarray, np.ndarray]],
    width: int,
    fit: np.ndarray | None,
    budget: int,
    seed: int = 0,
) -> Iterator[tuple[CodeQuantizer, np.ndarray, np.ndarray]]:
    """For every registered kind that spends a byte budget: a quantizer fitted to spend
    exactly ``budget`` bytes a vector on the prefix it reads (``reads`` of ``width`` dims), with
    the documents and queries at that prefix. ``vectors(w, kind)`` gives them, normalised at
    ``w`` dims, for codes of the class ``kind``; the calibration is their ``fit`` rows (at most
    :data:`ALLOCATION_ROWS`). Kinds that cannot code ``width`` dims at this budget (product
    codes need 4 dims a byte) are skipped."""
    for kind in quantizer_kinds("budget"):
        cls = quantizer_class(kind)
        try:
            cls.check(width, None, budget)
        except ConfigError as e:
            logger.warning("%s quantization at %d B skipped: %s", kind, budget, e)
            continue
        docs, queries = vectors(cls.reads(width, None, budget), cls)
        calibration = fit_rows(fit, docs)[:ALLOCATION_ROWS]
        yield fit_quantizer(kind, calibration, budget_bytes=budget, seed=seed), docs, queries


def _scalar_baseline(
    name: str,
    method: str,
    doc_vecs: np.ndarray,
    query_vecs: np.ndarray,
    bits: int,
    k: int,
    scorings: Sequence[str],
    rescore: int,
    fit: np.ndarray | None = None,
    fixed_bytes: int = 0,
    coded: int | None = None,
    sink: list[bytes] | None = None,
) -> Iterator[BaselineResult]:
    """Float vectors of a baseline method, percentile-quantized at ``bits`` and searched with each
    scoring; ``fixed_bytes``: what the method itself stores (a projection), besides the quantizer.
    ``fit``, ``coded`` and ``sink`` as in :func:`quantized_search`."""
    for scoring, s, i, nbytes, qbytes in quantized_search(
        doc_vecs, query_vecs, bits, k, scorings, rescore, fit=fit, sink=sink, coded=coded
    ):
        yield BaselineResult(
            name,
            scoring,
            s,
            i,
            nbytes,
            dims=doc_vecs.shape[1],
            bits=bits,
            method=method,
            quantization=Quantizer.kind,
            fixed_bytes=fixed_bytes + qbytes,
        )


def pq_baseline(
    model_name: str,
    doc_vecs: np.ndarray,
    query_vecs: np.ndarray,
    bits: int,
    k: int,
    scorings: Sequence[str] = ("symmetric", "asymmetric"),
    rescore: int = 0,
    fit: np.ndarray | None = None,
    coded: int | None = None,
    sink: list[bytes] | None = None,
) -> Iterator[BaselineResult]:
    """(a) ``pq-<model>-<bits>b``: one base model's own vectors, percentile-quantized per dimension."""
    search = (doc_vecs, query_vecs, bits, k, scorings, rescore, fit, 0, coded, sink)
    yield from _scalar_baseline(f"pq-{model_name}-{bits}b", f"pq-{model_name}", *search)


@dataclass
class PCAProjection:
    """Centred PCA: ``mean`` ``(D,)`` and ``components`` ``(dims, D)``, rows by decreasing variance."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray

    @classmethod
    def fit(cls, docs: np.ndarray, dims: int) -> PCAProjection:
        """Fit on the non-empty rows of ``docs`` (the corpus; never queries)."""
        x = np.asarray(docs, dtype=np.float64)
        x = x[nonempty_rows(x)]
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"PCA needs at least 2 non-empty rows, got shape {x.shape}")
        if not 1 <= dims <= min(x.shape[1], x.shape[0] - 1):
            raise ValueError(f"PCA of {x.shape[0]} rows of dimension {x.shape[1]} has no {dims} components")
        mean = x.mean(axis=0)
        centred = x - mean
        eigvals, eigvecs = np.linalg.eigh(centred.T @ centred / (x.shape[0] - 1))
        order = np.argsort(eigvals)[::-1][:dims]
        components = eigvecs[:, order].T
        # A deterministic sign: each component's largest coordinate is positive.
        signs = np.sign(components[np.arange(dims), np.abs(components).argmax(axis=1)])
        components *= np.where(signs == 0, 1.0, signs)[:, None]
        return cls(mean.astype(np.float32), components.astype(np.float32), eigvals[order].astype(np.float32))

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    def stored_bytes(self, dims: int) -> int:
        """float32 mean and the ``dims`` components a search needs."""
        return 4 * (self.mean.size + dims * self.components.shape[1])

    def project(self, x: np.ndarray, dims: int | None = None) -> np.ndarray:
        """L2-normalised projection of the centred rows on the top ``dims`` components;
        zero (empty) rows stay zero."""
        dims = self.dims if dims is None else int(dims)
        if not 1 <= dims <= self.dims:
            raise ValueError(f"this PCA has {self.dims} components, asked for {dims}")
        x = np.asarray(x, dtype=np.float32)
        out = l2_normalize((x - self.mean) @ self.components[:dims].T)
        out[~nonempty_rows(x)] = 0.0
        return out


def pca_baseline(
    pca: PCAProjection,
    docs: np.ndarray,
    queries: np.ndarray,
    dims: int,
    bits: int,
    k: int,
    scorings: Sequence[str] = ("symmetric", "asymmetric"),
    rescore: int = 0,
    fit: np.ndarray | None = None,
    coded: int | None = None,
    sink: list[bytes] | None = None,
) -> Iterator[BaselineResult]:
    """(b) ``pca-<dims>d-<bits>b``: the float concatenation's top ``dims`` principal components
    (``pca`` fitted on the corpus), percentile-quantized."""
    d_docs, d_queries = pca.project(docs, dims), pca.project(queries, dims)
    search = (d_docs, d_queries, bits, k, scorings, rescore, fit, pca.stored_bytes(dims), coded, sink)
    yield from _scalar_baseline(f"pca-{dims}d-{bits}b", "pca", *search)


def decoder_bytes(decoder: Decoder, rows: int | None = None) -> int:
    """The decoder's parameters as stored (float32 safetensors, headers aside); with ``rows``,
    those of the decoder an index reading that prefix stores (:func:`cecq.decoder.trimmed`)."""
    kept = decoder if rows is None else trimmed(decoder, rows)
    return sum(4 * int(v.numel()) for v in kept.state_dict().values())


def train_mrl_decoder(
    docs: np.ndarray, config: DecoderConfig, show_progress: bool = False, fit: np.ndarray | None = None
) -> Decoder:
    """The plain MRL recipe: cecq's decoder and loss from a random initialisation."""
    decoder, _ = train_decoder(fit_rows(fit, docs), replace(config, init="random"), show_progress=show_progress)
    return decoder


def mrl_baseline(
    decoder: Decoder,
    docs: np.ndarray,
    queries: np.ndarray,
    dims: int,
    bits: int,
    k: int,
    scorings: Sequence[str] = ("symmetric", "asymmetric"),
    rescore: int = 0,
    fit: np.ndarray | None = None,
    coded: int | None = None,
    sink: list[bytes] | None = None,
) -> Iterator[BaselineResult]:
    """(c) ``mrl-<dims>d-<bits>b``: the ``dims``-prefix of a randomly initialised MRL decoder, quantized."""
    d_docs, d_queries = decode(decoder, docs, dims), decode(decoder, queries, dims)
    search = (d_docs, d_queries, bits, k, scorings, rescore, fit, decoder_bytes(decoder, dims), coded, sink)
    yield from _scalar_baseline(f"mrl-{dims}d-{bits}b", "mrl", *search)


def binary_search(
    doc_vecs: np.ndarray,
    query_vecs: np.ndarray,
    k: int,
    rescore_multiplier: int = RESCORE_MULTIPLIER,
    empty: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """sentence-transformers' ``ubinary`` quantization (one bit a dimension: value > 0), searched
    by Hamming distance with binary queries; with ``rescore_multiplier`` > 0 the nearest
    ``rescore_multiplier * k`` are re-ranked by the float query against the documents' bits as
    +1/-1, as ``semantic_search_faiss``/``semantic_search_usearch`` rescore."""
    from sentence_transformers import quantize_embeddings

    dim = doc_vecs.shape[1]
    empty = ~nonempty_rows(doc_vecs) if empty is None else np.asarray(empty, dtype=bool)
    doc_bits = quantize_embeddings(np.asarray(doc_vecs, dtype=np.float32), precision="ubinary")
    query_bits = quantize_embeddings(np.asarray(query_vecs, dtype=np.float32), precision="ubinary")
    if rescore_multiplier <= 0:
        return search_hamming(query_bits, doc_bits, dim, k, empty=empty)
    _, candidates = search_hamming(query_bits, doc_bits, dim, rescore_multiplier * k, empty=empty)
    return rescore_signs(query_vecs, doc_bits, dim, candidates, k, empty=empty)


def st_binary_baseline(
    model_name: str, doc_vecs: np.ndarray, query_vecs: np.ndarray, k: int, rescore_multiplier: int = RESCORE_MULTIPLIER
) -> Iterator[BaselineResult]:
    """(d) ``st-binary-<model>`` (Hamming only, symmetric) and ``st-binary-<model>+rescore``
    (float-query rescoring of the Hamming candidates, asymmetric): ``dim / 8`` bytes a document."""
    dim = doc_vecs.shape[1]
    nbytes = (dim + 7) // 8
    yield BaselineResult(
        f"st-binary-{model_name}",
        "symmetric",
        *binary_search(doc_vecs, query_vecs, k, 0),
        nbytes,
        dims=dim,
        bits=1,
        method=f"st-binary-{model_name}",
    )
    yield BaselineResult(
        f"st-binary-{model_name}+rescore",
        "asymmetric",
        *binary_search(doc_vecs, query_vecs, k, rescore_multiplier),
        nbytes,
        dims=dim,
        bits=1,
        method=f"st-binary-{model_name}+rescore",
    )


def run_baselines(
    encoders: Sequence[Encoder],
    doc_parts: Sequence[np.ndarray],
    query_parts: Sequence[np.ndarray],
    docs: np.ndarray,
    queries: np.ndarray,
    config: EvalConfig,
    decoder_config: DecoderConfig,
    k: int,
    show_progress: bool = False,
    fit: np.ndarray | None = None,
    coded: int | None = None,
    sink: list[bytes] | None = None,
) -> Iterator[BaselineResult]:
    """Every baseline for an evaluation: (a) for each base model and bit width, (b) and (c) for
    each (dims, bits) pair the cecq variants use, (d) for every sentence-transformers model
    (a label-free choice: no "best model" is picked with the test judgements).
    ``docs``/``queries`` are the float concatenations; ``fit`` (a row mask) is what every
    baseline is fitted on (default: all documents); only the first ``coded`` document rows
    are coded and searched (the rest: another corpus's, to fit on); ``sink`` receives every
    fitted file's bytes (quantizers, PCA, the MRL decoder)."""
    scorings = tuple(config.scorings)
    pairs = config.configurations()
    for enc, d, q in zip(encoders, doc_parts, query_parts):
        for bits in sorted({b for _, b in pairs}):
            yield from pq_baseline(enc.name, d, q, bits, k, scorings, config.rescore, fit, coded, sink)

    fit_docs = fit_rows(fit, docs)
    max_pca = min(docs.shape[1], len(fit_docs) - 1)
    pca_pairs = [(dim, bits) for dim, bits in pairs if dim <= max_pca]
    if len(pca_pairs) < len(pairs):
        logger.warning(
            "PCA baseline: the concatenation has %d components; skipping dims %s",
            max_pca,
            sorted({d for d, _ in pairs} - {d for d, _ in pca_pairs}),
        )
    if pca_pairs:
        pca = PCAProjection.fit(fit_docs, max(d for d, _ in pca_pairs))
        if sink is not None:
            sink += [pca.mean.tobytes(), pca.components.tobytes()]
        for dim, bits in pca_pairs:
            yield from pca_baseline(pca, docs, queries, dim, bits, k, scorings, config.rescore, fit, coded, sink)

    if config.budgets and max_pca >= 1:
        # PCA with the same budget quantizers as cecq's budget variants, each on the prefix it reads.
        pca = PCAProjection.fit(fit_docs, max_pca)

        def prefix(width: int, kind: type[CodeQuantizer]) -> tuple[np.ndarray, np.ndarray]:
            return pca.project(docs, width), pca.project(queries, width)

        for budget in sorted(config.budgets):
            for quantizer, p_docs, p_queries in budget_quantizers(prefix, max_pca, fit, budget, config.decoder.seed):
                for scoring, s, i, nbytes, qbytes in quantized_search(
                    p_docs, p_queries, None, k, scorings, config.rescore, quantizer=quantizer, sink=sink, coded=coded
                ):
                    yield BaselineResult(
                        f"pca-{quantizer.label(quantizer.dim, None, budget)}",
                        scoring,
                        s,
                        i,
                        nbytes,
                        dims=quantizer.kept_dims,
                        method="pca",
                        quantization=quantizer.kind,
                        budget_bytes=budget,
                        fixed_bytes=qbytes + pca.stored_bytes(quantizer.dim),
                    )

    # The plain recipe: random initialisation and the joint MRL loss, whatever strategy cecq uses.
    decoder = train_mrl_decoder(docs, decoder_config.with_strategy("mrl"), show_progress, fit)
    if sink is not None:
        sink += [v.detach().cpu().numpy().tobytes() for v in decoder.state_dict().values()]
    for dim, bits in pairs:
        yield from mrl_baseline(decoder, docs, queries, dim, bits, k, scorings, config.rescore, fit, coded, sink)

    for enc, d, q in zip(encoders, doc_parts, query_parts):
        if not enc.fitted:  # a pretrained model (cached or not): signs of the task's own vectors
            yield from st_binary_baseline(enc.name, d[:coded], q, k)
