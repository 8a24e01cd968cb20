"""How a quantizer kind's published codes become FAISS codes: one :class:`CodeLayout` per
kind, found through :func:`code_layout` (a registry keyed by the quantizer class, never by
a kind's name).

- Product codes (:class:`ProductLayout`) are FAISS PQ codes as they stand: cecq's own
  codebooks become the ``ProductQuantizer`` centroids of a ``faiss.IndexIVFPQ`` without
  residuals, and the published bytes are added unchanged, so nothing is re-quantized. The
  quantizer's prefix cut and rotation become a ``LinearTransform`` pre-transform.
- Scalar and fitted-bit codes (:class:`DequantizedLayout`) have no FAISS code format with
  percentile thresholds and bin centroids, so their index holds the dequantized,
  normalised code-space vectors (``IndexIVFFlat``): exact scores, at 4 bytes a kept dim.
  Their codes stay the reference; the index is a search structure.

Every index is an inverted file: a flat one has a single cluster (every list is scanned),
an IVF one ``nlist`` k-means clusters. Within a cluster, documents are split into lists by
the norm of their dequantized vector (see :mod:`cecq.index.engine`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from cecq.encoders import l2_normalize
from cecq.errors import NoIndexStructureError
from cecq.quantization import CodeQuantizer, MixedQuantizer, ProductQuantizer, Quantizer


class CodeLayout(ABC):
    """A quantizer's codes as FAISS stores them. ``exact_scores``: FAISS's inner product
    is already cecq's cosine (else a shortlist is re-scored from the codes)."""

    name: ClassVar[str]
    exact_scores: ClassVar[bool]

    def __init__(self, quantizer: CodeQuantizer):
        self.quantizer = quantizer
        self.dim = int(quantizer.dequantize_packed(np.zeros((1, quantizer.bytes_per_vector), np.uint8)).shape[1])

    @abstractmethod
    def ivf(self, coarse: Any, nlist: int) -> Any:
        """An empty, trained FAISS inverted-file index of this layout (inner product) over the
        trained ``coarse`` quantizer; its lists hold the codes as :meth:`faiss_codes` gives them."""

    @abstractmethod
    def faiss_codes(self, packed: np.ndarray, empty: np.ndarray | None) -> np.ndarray:
        """The FAISS codes ``(n, code_size)`` uint8 of published packed codes."""

    def vectors(self, packed: np.ndarray, empty: np.ndarray | None) -> np.ndarray:
        """Normalised code-space vectors of packed codes (zero for documents without text):
        what coarse quantizers are trained on and documents assigned by."""
        v = l2_normalize(self.quantizer.dequantize_packed(packed))
        if empty is not None:
            v[np.asarray(empty, dtype=bool)] = 0.0
        return v

    def norms(self, codes: np.ndarray) -> np.ndarray:
        """Norms of the vectors FAISS scores, from their FAISS codes (ones where it scores
        normalised vectors)."""
        return np.ones(len(codes), np.float32)

    def pre_transform(self) -> Any | None:
        """A FAISS transform from decoder outputs to this layout's space, or None when the
        space is the decoder output itself."""
        return None

    def matches(self, index: Any) -> bool:
        """Whether a loaded index codes with exactly this quantizer's parameters."""
        return True


def _faiss() -> Any:
    import faiss

    return faiss


class ProductLayout(CodeLayout):
    """Product codes as FAISS PQ codes, byte for byte (8 bits a subspace, cecq's codebooks)."""

    name = "pq"
    exact_scores = False  # FAISS ranks by q . centroid sum; cecq's cosine divides by its norm

    quantizer: ProductQuantizer

    def _set_codebooks(self, pq: Any) -> None:
        _faiss().copy_array_to_vector(np.ascontiguousarray(self.quantizer.codebooks, np.float32).ravel(), pq.centroids)

    def ivf(self, coarse: Any, nlist: int) -> Any:
        faiss, q = _faiss(), self.quantizer
        index = faiss.IndexIVFPQ(coarse, q.kept_dims, nlist, q.subspaces, 8, faiss.METRIC_INNER_PRODUCT)
        index.by_residual = False  # residual codes would re-quantize: the lists hold the published bytes
        self._set_codebooks(index.pq)
        index.precompute_table()
        index.is_trained = True
        return index

    def faiss_codes(self, packed: np.ndarray, empty: np.ndarray | None) -> np.ndarray:
        return np.ascontiguousarray(self.quantizer.unpack(packed))

    def norms(self, codes: np.ndarray) -> np.ndarray:
        # subspaces are orthogonal blocks: a code's squared norm is the sum of its centroids'
        q = self.quantizer
        if not hasattr(self, "_squares"):
            self._squares = np.einsum("mkd,mkd->mk", q.codebooks, q.codebooks).astype(np.float64)
        return np.sqrt(self._squares[np.arange(q.subspaces), np.asarray(codes).astype(np.intp)].sum(axis=1))

    def pre_transform(self) -> Any:
        faiss, q = _faiss(), self.quantizer
        a = np.zeros((q.kept_dims, q.dim), np.float32)
        a[:, : q.kept_dims] = q.rotation.T  # y = x[:kept] @ R, as FAISS's y = A x
        t = faiss.LinearTransform(q.dim, q.kept_dims, False)
        faiss.copy_array_to_vector(a.ravel(), t.A)
        t.is_trained = True
        return t

    def matches(self, index: Any) -> bool:
        pq = index.pq
        return (pq.M, pq.dsub, pq.nbits) == (self.quantizer.subspaces, self.quantizer.sub_dim, 8) and np.array_equal(
            _faiss().vector_to_array(pq.centroids), np.ascontiguousarray(self.quantizer.codebooks, np.float32).ravel()
        )


class DequantizedLayout(CodeLayout):
    """Codes FAISS has no format for, as their normalised dequantized vectors (exact)."""

    name = "dequantized"
    exact_scores = True

    def ivf(self, coarse: Any, nlist: int) -> Any:
        faiss = _faiss()
        index = faiss.IndexIVFFlat(coarse, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.is_trained = True
        return index

    def faiss_codes(self, packed: np.ndarray, empty: np.ndarray | None) -> np.ndarray:
        return np.ascontiguousarray(self.vectors(packed, empty)).view(np.uint8)


_LAYOUTS: dict[type[CodeQuantizer], type[CodeLayout]] = {}


def register_layout(quantizer_cls: type[CodeQuantizer], layout_cls: type[CodeLayout]) -> None:
    """Index the codes of ``quantizer_cls`` (and its subclasses) with ``layout_cls``."""
    if not (isinstance(layout_cls, type) and issubclass(layout_cls, CodeLayout)):
        raise TypeError(f"{layout_cls!r} is not a CodeLayout subclass")
    _LAYOUTS[quantizer_cls] = layout_cls


for _q, _l in ((ProductQuantizer, ProductLayout), (Quantizer, DequantizedLayout), (MixedQuantizer, DequantizedLayout)):
    register_layout(_q, _l)


def code_layout(quantizer: CodeQuantizer) -> CodeLayout:
    """The layout of ``quantizer``'s codes; NoIndexStructureError for a kind without one."""
    for cls in type(quantizer).__mro__:
        if cls in _LAYOUTS:
            return _LAYOUTS[cls](quantizer)
    raise NoIndexStructureError(
        f"{quantizer.kind!r} codes have no FAISS index structure (layouts exist for "
        f"{', '.join(sorted(c.kind for c in _LAYOUTS))}); search this store exhaustively with --exact, or "
        "register one with cecq.index.register_layout"
    )
