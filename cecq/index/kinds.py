"""Index kinds: how documents are clustered for FAISS (one :class:`IndexKind` each, one
registry). ``flat`` puts every document in one cluster, so a search scores every code;
``ivf`` clusters the codes' vectors by k-means into ``nlist`` clusters and a search scores
the ``nprobe`` clusters nearest the query. Both take a
:class:`~cecq.index.layouts.CodeLayout` for the codes themselves, so every kind works with
every quantizer kind that has a layout."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from cecq.config import IndexConfig
from cecq.errors import ConfigError


class IndexKind(ABC):
    """Chooses a kind's parameters and its cluster centroids."""

    name: ClassVar[str]
    trains: ClassVar[bool] = False  # needs a corpus sample for its centroids

    def params(self, n_docs: int, config: IndexConfig) -> dict[str, Any]:
        """The kind's resolved parameters for ``n_docs`` documents (checked; part of the name)."""
        return {}

    def artifact_name(self, params: dict[str, Any]) -> str:
        """The index's name in the store: the kind and its parameters."""
        return "-".join([self.name, *(f"{k}{v}" for k, v in sorted(params.items()))])

    def train_rows(self, params: dict[str, Any], config: IndexConfig) -> int:
        return 0

    @abstractmethod
    def centroids(self, dim: int, sample: np.ndarray | None, params: dict[str, Any], seed: int) -> np.ndarray:
        """``(clusters, dim)`` centroids (``sample``: normalised code-space vectors of corpus rows)."""

    def check_nprobe(self, clusters: int, nprobe: int | None) -> int:
        """Clusters a query searches (validated): all of them unless the kind probes."""
        if nprobe is not None:
            raise ConfigError(f"nprobe applies to IVF indexes only, not a {self.name!r} index")
        return clusters


class FlatKind(IndexKind):
    name = "flat"

    def centroids(self, dim: int, sample: np.ndarray | None, params: dict[str, Any], seed: int) -> np.ndarray:
        return np.zeros((1, dim), np.float32)


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

    def centroids(self, dim: int, sample: np.ndarray | None, params: dict[str, Any], seed: int) -> np.ndarray:
        import faiss

        if sample is None or len(sample) < params["nlist"]:
            raise ValueError(f"an IVF index of {params['nlist']} lists needs at least as many sample rows")
        kmeans = faiss.Kmeans(dim, params["nlist"], niter=20, seed=seed, spherical=True, verbose=False)
        kmeans.cp.max_points_per_centroid = max(256, len(sample) // params["nlist"] + 1)
        kmeans.train(np.ascontiguousarray(sample, np.float32))
        return np.ascontiguousarray(kmeans.centroids, np.float32)

    def check_nprobe(self, clusters: int, nprobe: int | None) -> int:
        if nprobe is None:
            raise ConfigError("an IVF search needs nprobe")
        if not 1 <= nprobe <= clusters:
            raise ConfigError(f"nprobe must be in 1..{clusters} (the index's lists), got {nprobe}")
        return nprobe


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
