"""Format versions, table-driven: every artifact kind a store holds says which format wrote it;
a file of the legacy store (tests/fixtures/legacy-store, written before versions existed)
reads as version 1; a file stamped by a newer cecq is refused by its reader with a message
naming both versions; and today's writers stamp what they write."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cecq.catalog import current_manifest, load_compressor, load_store_encoder, read_run
from cecq.catalog.layout import CURRENT_FORMAT
from cecq.catalog.reader import check_artifact
from cecq.catalog.records import SCHEMA_VERSION, CorpusManifest
from cecq.decoder import Decoder, save_decoder
from cecq.decoder.io import DECODER_FORMAT
from cecq.encoders.lexical import LEXICAL_FORMAT
from cecq.errors import RecordVersionError
from cecq.quantization import fit_quantizer
from cecq.quantization.file import METADATA_KEY, QUANTIZER_FORMAT
from cecq.quantization.product import SEEDED_FORMAT
from cecq.storage import FORMAT_KEY, PARQUET_FORMATS, Store
from tests.helpers.paths import FIXTURES

LEGACY = FIXTURES / "legacy-store" / "store"
NEWER = 99


def bump_json(key: str) -> Callable[[Path], None]:
    def bump(path: Path) -> None:
        d = json.loads(path.read_text())
        d[key] = NEWER
        path.write_text(json.dumps(d))

    return bump


def bump_manifest_formats(path: Path) -> None:
    d = json.loads(path.read_text())
    d["formats"] = {"codes": NEWER}
    path.write_text(json.dumps(d))


def bump_parquet(artifact: str) -> Callable[[Path], None]:
    def bump(path: Path) -> None:
        t = pq.read_table(path)
        stamp = json.dumps({"artifact": artifact, "version": NEWER}).encode()
        pq.write_table(t.replace_schema_metadata({**(t.schema.metadata or {}), FORMAT_KEY: stamp}), path)

    return bump


def bump_quantizer(path: Path) -> None:
    t = pq.read_table(path)
    meta = json.loads(t.schema.metadata[METADATA_KEY.encode()])
    meta["format_version"] = NEWER
    pq.write_table(t.replace_schema_metadata({METADATA_KEY: json.dumps(meta)}), path)


def _compressor(s: Store) -> None:
    m = current_manifest(s)
    load_compressor(s, m.decoder, m.quantizer)


def _corpus_manifest(s: Store) -> None:
    CorpusManifest.from_dict(s.read_json(current_manifest(s).corpus_manifest))


def _lexical(s: Store) -> None:
    m = current_manifest(s)
    load_store_encoder(s, "lexical", m.corpus_key)


def _first_parquet(pattern: str) -> Callable[[Store], None]:
    def read(s: Store) -> None:
        rel = s.glob(pattern)[0]
        s.read_parquet(rel)  # the reader of embedding and corpus shards
        check_artifact(s, rel)  # what a step checks before it skips a committed file

    return read


# artifact -> (the file, how a newer cecq would stamp it, its reader, the version this cecq reads)
CASES: dict[str, tuple[str, Callable[[Path], None], Callable[[Store], None], int]] = {
    "catalog pointer": ("catalog/current.json", bump_json("format_version"), current_manifest, CURRENT_FORMAT),
    "catalog manifest": (
        "catalog/v000003/manifest.json",
        bump_json("schema_version"),
        current_manifest,
        SCHEMA_VERSION,
    ),
    "codes shards (through the manifest)": (
        "catalog/v000003/manifest.json",
        bump_manifest_formats,
        current_manifest,
        PARQUET_FORMATS["codes"],
    ),
    "run record": (
        "runs/*/run.json",
        bump_json("schema_version"),
        lambda s: read_run(s, current_manifest(s).run_id),
        SCHEMA_VERSION,
    ),
    "corpus manifest": ("corpus/*/manifest-*.json", bump_json("schema_version"), _corpus_manifest, SCHEMA_VERSION),
    "decoder config": ("runs/*/decoder/decoder.json", bump_json("format_version"), _compressor, DECODER_FORMAT),
    "quantizer file": ("runs/*/quantizer.parquet", bump_quantizer, _compressor, QUANTIZER_FORMAT),
    "lexical model": ("models/*/lexical.json", bump_json("format_version"), _lexical, LEXICAL_FORMAT),
    "embedding shard": (
        "embeddings/*/*.parquet",
        bump_parquet("embeddings"),
        _first_parquet("embeddings/*/*.parquet"),
        PARQUET_FORMATS["embeddings"],
    ),
    "corpus shard": (
        "corpus/*/*.parquet",
        bump_parquet("corpus"),
        _first_parquet("corpus/*/*.parquet"),
        PARQUET_FORMATS["corpus"],
    ),
    "codes shard": (
        "codes/*/*.parquet",
        bump_parquet("codes"),
        _first_parquet("codes/*/*.parquet"),
        PARQUET_FORMATS["codes"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_artifact_of_a_newer_format_is_refused_naming_both_versions(case, tmp_path):
    pattern, bump, read, supported = CASES[case]
    root = tmp_path / "store"
    shutil.copytree(LEGACY, root)
    for path in root.glob(pattern):  # every run's, every shard's: whichever the reader opens
        bump(path)
    store = Store(str(root))
    with pytest.raises(RecordVersionError, match=rf"version {NEWER}; this cecq reads up to (version )?{supported}"):
        read(store)


@pytest.mark.parametrize("case", list(CASES))
def test_each_artifact_of_the_legacy_store_reads_as_version_1(case):
    _, _, read, _ = CASES[case]
    read(Store(str(LEGACY)))  # no version anywhere in these files: the first release's format


def test_todays_writers_stamp_every_artifact(tmp_path):
    store = Store(str(tmp_path))
    for artifact, version in PARQUET_FORMATS.items():
        store.write_parquet(f"{artifact}.parquet", pa.table({"x": [1]}), artifact)
        stamp = json.loads(pq.read_schema(tmp_path / f"{artifact}.parquet").metadata[FORMAT_KEY])
        assert stamp == {"artifact": artifact, "version": version}
    save_decoder(Decoder(8, 8, "linear", None), tmp_path / "decoder")
    assert json.loads((tmp_path / "decoder" / "decoder.json").read_text())["format_version"] == DECODER_FORMAT
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    # each quantizer file gets the lowest version that reads it; version 1 is unstamped, so
    # first-release files are written back byte for byte. Product files store the rotation's seed.
    for kind, kwargs, version in [("scalar", {"bits": 2}, 1), ("product", {"budget_bytes": 2}, SEEDED_FORMAT)]:
        buf = io.BytesIO()
        fit_quantizer(kind, x, **kwargs).save(buf)
        meta = json.loads(pq.read_schema(io.BytesIO(buf.getvalue())).metadata[METADATA_KEY.encode()])
        assert meta.get("format_version", 1) == version, kind
    assert CorpusManifest("u", "k", "_id", ["text"]).to_dict()["schema_version"] == SCHEMA_VERSION
