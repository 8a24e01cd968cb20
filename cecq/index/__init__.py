"""FAISS indexes over published codes: how a quantizer's codes become FAISS codes
(``layouts``: one per quantizer kind, a registry keyed by quantizer class), how documents
are organised (``kinds``: flat, ivf; one registry), and searching an index and its bytes
(``engine``). Building one from a store is a pipeline step (:mod:`cecq.pipeline.index`);
using one is the catalog's search (:mod:`cecq.catalog.search`)."""

from cecq.index.engine import (
    GroupedSearcher,
    add_documents,
    coarse_centroids,
    from_bytes,
    inner_index,
    make_index,
    norm_edges,
    with_pre_transform,
    write_index_file,
)
from cecq.index.kinds import FlatKind, IndexKind, IvfKind, default_nlist, index_kind, index_kinds, register_index_kind
from cecq.index.layouts import CodeLayout, DequantizedLayout, ProductLayout, code_layout, register_layout

__all__ = [
    "CodeLayout",
    "DequantizedLayout",
    "FlatKind",
    "GroupedSearcher",
    "IndexKind",
    "IvfKind",
    "ProductLayout",
    "add_documents",
    "coarse_centroids",
    "code_layout",
    "default_nlist",
    "from_bytes",
    "index_kind",
    "index_kinds",
    "inner_index",
    "make_index",
    "norm_edges",
    "register_index_kind",
    "register_layout",
    "with_pre_transform",
    "write_index_file",
]
