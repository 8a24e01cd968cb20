"""Index kinds: how documents are organised for FAISS (one :class:`IndexKind` each, one
registry). ``flat`` scores every code; ``ivf`` clusters the codes' vectors into ``nlist``
inverted lists and scores the ``nprobe`` lists nearest a query. Both take a
:class:`~cecq.index.layouts.CodeLayout` for the codes themselves, so every kind works
with every quantizer kind that has a layout."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from cecq.config import IndexConfig
from cecq.errors import ConfigError
from cecq.index.layouts import CodeLayout


class IndexKind(ABC):
    """Builds an empty trained FAISS index of a layout, then takes documents batch by batch."""

    name: ClassVar[str]
    trains: ClassVar[bool] = False  # needs a corpus sample before documents are added

    def params(self, n_docs: int, config: IndexConfig) -> dict[str, Any]:
        """The kind's resolved parameters for ``n_docs`` documents (checked; part of the name)."""
        return {}

    def artifact_name(self, params: dict[str, Any]) -> str:
        """The index's name in the store: the kind and its parameters."""
        return "-".join([self.name, *(f"{k}{v}" for k, v in sorted(params.items()))])

    def train_rows(self, params: dict[str, Any], config: IndexConfig) -> int:
        return 0

    @abstractmethod
    def make(self, layout: CodeLayout, sample: np.ndarray | None, params: dict[str, Any], seed: int) -> Any:
        """An empty, trained index (``sample``: normalised code-space vectors of corpus rows)."""

    @abstractmethod
    def add(self, index: Any, layout: CodeLayout, packed: np.ndarray, empty: np.ndarray | None, first_id: int) -> None:
        """Append documents ``first_id ...``: their published packed codes and empty flags."""

    def check_search(self, index: Any, nprobe: int | None) -> dict[str, Any]:
        """FAISS search parameters for a query (validated)."""
        if nprobe is not None:
            raise ConfigError(f"nprobe applies to IVF indexes only, not a {self.name!r} index")
        return {}


class FlatKind(IndexKind):
    name = "flat"

    def make(self, layout: CodeLayout, sample: np.ndarray | None, params: dict[str, Any], seed: int) -> Any:
        return layout.flat()

    def add(self, index: Any, layout: CodeLayout, packed: np.ndarray, empty: np.ndarray | None, first_id: int) -> None:
        if index.ntotal != first_id:
            raise ValueError(f"flat index holds {index.ntotal} documents, next batch starts at {first_id}")
        index.add_sa_codes(layout.faiss_codes(packed, empty))


def default_nlist(n_docs: int, min_rows_per_list: int = 39) -> int:
    """About the square root of the documents, as a power of two, with at least
    ``min_rows_per_list`` documents a list to train on (FAISS's own floor)."""
    nlist = 2 ** round(math.log2(max(1.0, math.sqrt(n_docs))))
    while nlist > 1 and nlist * min_rows_per_list > n_docs:
        nlist //= 2
    return nlist


class IvfKind(IndexKind):
    name = "ivf"
    trains = True

    def params(self, n_docs: int, config: IndexConfig) -> dict[str, Any]:
        nlist = config.nlist if config.nlist is not None else default_nlist(n_docs)
        if not 1 <= nlist <= n_docs:
            raise ConfigError(f"nlist must be in 1..{n_docs} (the documents of this catalog version), got {nlist}")
        return {"nlist": nlist}

    def train_rows(self, params: dict[str, Any], config: IndexConfig) -> int:
        return params["nlist"] * config.train_rows_per_list

    def make(self, layout: CodeLayout, sample: np.ndarray | None, params: dict[str, Any], seed: int) -> Any:
        import faiss

        if sample is None or len(sample) < params["nlist"]:
            raise ValueError(f"an IVF index of {params['nlist']} lists needs at least as many sample rows")
        kmeans = faiss.Kmeans(layout.dim, params["nlist"], niter=20, seed=seed, spherical=True, verbose=False)
        kmeans.cp.max_points_per_centroid = max(256, len(sample) // params["nlist"] + 1)
        kmeans.train(np.ascontiguousarray(sample, np.float32))
        coarse = faiss.IndexFlatIP(layout.dim)
        coarse.add(kmeans.centroids)
        index = layout.ivf(coarse, params["nlist"])
        index.own_fields = True
        coarse.this.disown()  # the IVF index frees its coarse quantizer
        return index

    def add(self, index: Any, layout: CodeLayout, packed: np.ndarray, empty: np.ndarray | None, first_id: int) -> None:
        codes = layout.faiss_codes(packed, empty)
        _, lists = index.quantizer.search(np.ascontiguousarray(layout.vectors(packed, empty)), 1)
        width = index.coarse_code_size()
        listno = lists[:, 0].astype("<u8").view(np.uint8).reshape(-1, 8)[:, :width]
        ids = np.arange(first_id, first_id + len(codes), dtype=np.int64)
        index.add_sa_codes(np.ascontiguousarray(np.concatenate([listno, codes], axis=1)), ids)

    def check_search(self, index: Any, nprobe: int | None) -> dict[str, Any]:
        if nprobe is None:
            return {}
        if not 1 <= nprobe <= index.nlist:
            raise ConfigError(f"nprobe must be in 1..{index.nlist} (the index's lists), got {nprobe}")
        return {"nprobe": nprobe}


_KINDS: dict[str, IndexKind] = {}


def register_index_kind(kind: IndexKind) -> None:
    """Make ``kind`` available to ``cecq index build --kind``."""
    _KINDS[kind.name] = kind


for _k in (FlatKind(), IvfKind()):
    register_index_kind(_k)


def index_kinds() -> list[str]:
    return list(_KINDS)


def index_kind(name: str) -> IndexKind:
    if name not in _KINDS:
        raise ConfigError(f"unknown index kind {name!r}; choose from {', '.join(_KINDS)}")
    return _KINDS[name]
