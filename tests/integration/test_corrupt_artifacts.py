"""Damaged artifacts, table-driven: one tiny store is built once (real embed-corpus flow,
Prefect's harness, local Ray) and copied for every case; one of its files is truncated, and
every reader (`cecq sql`, `search`, `eval-store`, `reindex`) must either name the file, say
that it is truncated or corrupt and how to recover, or not need the file at all. Then the
recovery the message gives is followed, and the store reads as it did before the damage."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cecq.cli import main
from tests.helpers.beir import synthetic_beir_parts, write_beir

pytestmark = pytest.mark.slow

EMBED = ["--model", "lexical", "--shard-rows", "20", "--dims", "16", "--bits", "2", "--out-dim", "32"]
EMBED += ["--max-epochs", "2"]
QUERY = "SELECT id, code FROM documents ORDER BY id"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, ray_cluster, prefect_api) -> tuple[Path, Path]:
    """(BEIR folder, a published store built from its corpus)."""
    root = tmp_path_factory.mktemp("corrupt")
    beir = write_beir(root / "beir", *synthetic_beir_parts())
    assert main(["embed-corpus", str(beir / "corpus.jsonl"), "--store", str(root / "store"), *EMBED]) == 0
    return beir, root / "store"


def readers(beir: Path, store: Path, out: Path) -> dict[str, list[str]]:
    return {
        "sql": ["sql", "--store", str(store), "--json", QUERY],
        "search": ["search", "soil seed garden", "--store", str(store), "-k", "3", "--json"],
        "eval-store": ["eval-store", str(beir), "--store", str(store), "--json", str(out)],
        "reindex": ["reindex", str(beir / "corpus.jsonl"), "--store", str(store)],
    }


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def one(store: Path, pattern: str) -> Path:
    [path] = sorted(store.glob(pattern))[:1]
    return path


def rerun_embed_corpus(beir: Path, store: Path) -> None:
    assert main(["embed-corpus", str(beir / "corpus.jsonl"), "--store", str(store), *EMBED]) == 0


def drop_first_version_and_rerun(beir: Path, store: Path) -> None:
    shutil.rmtree(store / "catalog")  # as the message says for a damaged first version
    rerun_embed_corpus(beir, store)


def point_at_version_1(beir: Path, store: Path) -> None:
    (store / "catalog" / "current.json").write_text(json.dumps({"version": 1}))


OK, DAMAGED = "ok", "damaged"
# name -> (the damaged file, what each reader does: OK, DAMAGED (a named error; reindex
#          repairs where it is DAMAGED-but-derived, see below) or None (not run: the reader
#          does not read that file), the recovery hint the message gives, how to recover)
CASES: dict[str, tuple[str, dict[str, str | None], str, Callable[[Path, Path], None] | None]] = {
    "codes shard": (
        "codes/*/*.parquet",
        {"sql": DAMAGED, "search": DAMAGED, "eval-store": DAMAGED, "reindex": OK},  # reindex recompresses it
        r"rerun the same `cecq embed-corpus` or `cecq reindex`: it rewrites this derived file",
        None,
    ),
    "decoder safetensors": (
        "runs/*/decoder/decoder.safetensors",
        {"sql": OK, "search": DAMAGED, "eval-store": DAMAGED, "reindex": OK},  # reindex retrains it
        r"rerun the `cecq embed-corpus` that trained it",
        None,
    ),
    "quantizer Parquet": (
        "runs/*/quantizer.parquet",
        {"sql": OK, "search": DAMAGED, "eval-store": DAMAGED, "reindex": None},  # as the decoder
        r"rerun the `cecq embed-corpus` that trained it",
        rerun_embed_corpus,  # the writing step itself: retrains, byte for byte
    ),
    "run record": (
        "runs/*/run.json",
        {"sql": DAMAGED, "search": OK, "eval-store": DAMAGED, "reindex": None},
        r"rerun the run's `cecq embed-corpus` \(same corpus and options\): publishing rewrites it",
        rerun_embed_corpus,
    ),
    "catalog manifest": (
        "catalog/v000001/manifest.json",
        {"sql": DAMAGED, "search": DAMAGED, "eval-store": DAMAGED, "reindex": DAMAGED},
        r"restore it from a backup \(catalog manifests are the published history and are not derived\)",
        drop_first_version_and_rerun,
    ),
    "catalog pointer": (
        "catalog/current.json",
        {"sql": DAMAGED, "search": DAMAGED, "eval-store": DAMAGED, "reindex": DAMAGED},
        r'restore it from a backup, or write \{"version": <N>\} into it',
        point_at_version_1,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_artifact_is_named_by_every_reader_and_its_recovery_works(case, pristine, tmp_path, capsys):
    beir, original = pristine
    pattern, expected, hint, recover = CASES[case]
    store = tmp_path / "store"
    shutil.copytree(original, store)
    assert main(readers(beir, store, tmp_path / "e.json")["sql"]) == 0
    before = capsys.readouterr().out

    damaged = one(store, pattern)
    truncate(damaged)
    message = re.escape(str(damaged)) + r" is truncated or corrupt \(.+\); to recover, " + hint
    for reader, args in readers(beir, store, tmp_path / "e.json").items():
        if expected[reader] is None:
            continue
        code = main(args)
        err = capsys.readouterr().err
        if expected[reader] == DAMAGED:
            assert code == 2 and re.search(message, err), (reader, err[-2000:])
        else:
            assert code == 0, (reader, err[-2000:])

    if recover is not None:
        recover(beir, store)
    for reader in ("sql", "search", "eval-store"):  # the store reads again...
        assert main(readers(beir, store, tmp_path / "e.json")[reader]) == 0, capsys.readouterr().err[-2000:]
    capsys.readouterr()
    assert main(readers(beir, store, tmp_path / "e.json")["sql"]) == 0
    assert capsys.readouterr().out == before  # ...and publishes the same documents and codes
