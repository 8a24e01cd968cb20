"""The store as readers see it: where artifacts live (``layout``), the typed records that
describe runs and versions (``records``), reading them and DuckDB views (``reader``), and
search over the published codes (``search``). The pipeline writes what this package reads;
nothing here imports the pipeline."""

from cecq.catalog.reader import (
    connect,
    current_manifest,
    current_version,
    index_records,
    load_compressor,
    load_quantizer,
    load_store_encoder,
    read_manifest,
    read_run,
    view_statements,
)
from cecq.catalog.records import (
    SCHEMA_VERSION,
    CatalogManifest,
    CodesShard,
    CorpusManifest,
    EmbeddingResult,
    EmbedShardResult,
    IndexRecord,
    RunRecord,
    ShardInfo,
    run_id_for,
)
from cecq.catalog.search import (
    LoadedIndex,
    SearchPlan,
    connect_with_search,
    load_index,
    plan_search,
    query_encoder,
    search_published,
    search_store,
    search_store_batch,
)
from cecq.errors import NoCatalogError

__all__ = [
    "SCHEMA_VERSION",
    "CatalogManifest",
    "CodesShard",
    "CorpusManifest",
    "EmbedShardResult",
    "EmbeddingResult",
    "IndexRecord",
    "LoadedIndex",
    "NoCatalogError",
    "RunRecord",
    "SearchPlan",
    "ShardInfo",
    "connect",
    "connect_with_search",
    "current_manifest",
    "current_version",
    "index_records",
    "load_compressor",
    "load_index",
    "load_quantizer",
    "load_store_encoder",
    "plan_search",
    "query_encoder",
    "read_manifest",
    "read_run",
    "run_id_for",
    "search_published",
    "search_store",
    "search_store_batch",
    "view_statements",
]
