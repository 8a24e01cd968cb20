"""The quantizer registry and the file envelope: every kind reads the files of the code
before the reshaping and writes them back byte for byte."""

from __future__ import annotations

import io

import pytest

from cecq.errors import ConfigError
from cecq.quantization import load_quantizer, quantizer_class, quantizer_kinds, resolve_kind
from tests.helpers.paths import FIXTURES

LEGACY_QUANTIZERS = sorted((FIXTURES / "legacy-store" / "store" / "runs").glob("*/quantizer.parquet"))


def test_the_built_in_kinds_and_how_a_run_resolves_its_kind():
    assert quantizer_kinds() == ["scalar", "mixed", "product"]
    assert quantizer_kinds("budget") == ["mixed", "product"] and quantizer_kinds("bits") == ["scalar"]
    assert resolve_kind(None, None) == "scalar" and resolve_kind(None, 48) == "mixed"
    assert resolve_kind("scalar", 48) == "mixed"  # the spelling of stores before kinds had names
    assert resolve_kind("product", 48) == "product"
    with pytest.raises(ConfigError, match="unknown quantization 'lattice'; choose from scalar, mixed, product"):
        quantizer_class("lattice")


@pytest.mark.parametrize("path", LEGACY_QUANTIZERS, ids=lambda p: p.parent.name)
def test_files_written_before_the_reshaping_are_read_and_written_back_unchanged(path):
    quantizer = load_quantizer(path)
    buf = io.BytesIO()
    quantizer.save(buf)
    assert buf.getvalue() == path.read_bytes()


def test_the_fixture_holds_every_built_in_kind():
    assert sorted(load_quantizer(p).kind for p in LEGACY_QUANTIZERS) == ["mixed", "product", "scalar"]
