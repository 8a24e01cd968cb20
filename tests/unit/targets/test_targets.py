"""The compression target's rule: the README's headline index by default, fitted bits for
small corpora, explicit options overriding what they name, and clear errors."""

from __future__ import annotations

import pytest

from cecq.config import PipelineConfig
from cecq.errors import ConfigError
from cecq.targets import CompressionPlan, CompressionTarget

MINILM_LEXICAL = 384 + 256  # the default models' total dimension


def test_the_default_is_the_readme_headline_index():
    # README: --dims 212 --budget-bytes 53 --quantization product, 48.3x: the codes read the
    # first 4 x 53 outputs, so the decoder is trained with those outputs only
    plan = CompressionTarget().plan(MINILM_LEXICAL, 5183)
    assert (plan.out_dim, plan.dims, plan.budget_bytes, plan.quantization) == (212, 212, 53, "product")
    assert plan.compression == pytest.approx(48.3, abs=0.05) and plan.target == 48.0
    assert "48x" in plan.reason and "product" in plan.reason
    assert plan.describe().startswith("a 212-dim decoder, product codes of 53 bytes")
    assert CompressionTarget(bits=2).plan(MINILM_LEXICAL, 5183).describe().startswith("212 dims of a 768-dim decoder")


def test_small_corpora_get_fitted_bits_and_say_why():
    plan = CompressionTarget().plan(MINILM_LEXICAL, 1023)
    assert (plan.quantization, plan.budget_bytes, plan.dims) == ("mixed", 53, 768)
    assert "1,023 documents are fewer than the 1,024" in plan.reason
    assert CompressionTarget().plan(MINILM_LEXICAL, 1024).quantization == "product"


def test_the_ratio_sets_the_bytes():
    assert CompressionTarget(compression=32).plan(MINILM_LEXICAL, 5000).budget_bytes == 80
    plan = CompressionTarget(compression=8).plan(MINILM_LEXICAL, 5000)  # 320 bytes: product needs 1,280 dims
    assert plan.budget_bytes == 320 and plan.dims == plan.out_dim == 1280
    plan.apply(PipelineConfig(corpus="c", store="s"))  # and the plan is a valid pipeline config


def test_overrides_replace_only_what_they_name():
    plan = CompressionTarget(bits=2).plan(MINILM_LEXICAL, 5000)  # scalar codes at the target ratio
    assert (plan.quantization, plan.dims, plan.bytes_per_doc, plan.budget_bytes) == ("scalar", 212, 53, None)
    assert plan.out_dim == 768  # bit-sized codes: the benchmark's decoder, its first dims published
    plan = CompressionTarget(quantization="mixed").plan(MINILM_LEXICAL, 5000)
    assert (plan.quantization, plan.budget_bytes) == ("mixed", 53)
    plan = CompressionTarget(dims=256, bits=2).plan(MINILM_LEXICAL, 5000)  # fully explicit: the ratio is unused
    assert (plan.dims, plan.bytes_per_doc, plan.compression, plan.target) == (256, 64, 40.0, None)
    assert plan.reason == "set by --dims 256 --bits 2"
    plan = CompressionTarget(budget_bytes=40, out_dim=512).plan(MINILM_LEXICAL, 5000)
    assert (plan.out_dim, plan.dims, plan.budget_bytes, plan.quantization) == (512, 160, 40, "product")
    plan = CompressionTarget(budget_bytes=40, out_dim=512, dims=512).plan(MINILM_LEXICAL, 5000)
    assert plan.dims == 512  # explicit dims: the whole output, normalised over all of it, as before
    plan = CompressionTarget(dims=1024, budget_bytes=53, quantization="product").plan(MINILM_LEXICAL, 5000)
    assert (plan.out_dim, plan.dims) == (1024, 1024)  # explicit dims beyond 768 raise the decoder's output
    plan.apply(PipelineConfig(corpus="c", store="s"))


def test_explicit_flags_give_the_config_they_always_gave():
    """Old command lines keep their run ids: the plan of explicit flags is the old config."""
    old = PipelineConfig(corpus="c", store="s", dims=16, bits=2, budget_bytes=4, quantization="product")
    target = CompressionTarget(dims=16, bits=2, budget_bytes=4, quantization="product", out_dim=512)
    assert target.plan(100, 40).apply(PipelineConfig(corpus="c", store="s")) == old


def test_a_corpus_too_small_for_the_target_names_the_nearest_feasible_ratio():
    with pytest.raises(ConfigError, match=r"30 documents is too small for 48x.*nearest feasible") as e:
        CompressionTarget().plan(413, 30)
    nearest = float(e.value.args[0].split("--compression ")[1].split(")")[0])
    assert CompressionTarget(compression=nearest).plan(413, 30).budget_bytes == 15  # feasible, and the nearest
    with pytest.raises(ConfigError):
        CompressionTarget(compression=nearest - 0.1).plan(413, 30)
    with pytest.raises(ConfigError, match="nearest feasible ratio is 2560x"):
        CompressionTarget(compression=10_000).plan(MINILM_LEXICAL, 5000)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"compression": 0.5}, "compression must be a ratio above 1"),
        ({"bits": 3}, "bits must be one of"),
        ({"dims": 0}, "dims must be >= 1"),
        ({"dims": 800, "out_dim": 768}, r"dims must be in 1..768"),
        ({"quantization": "nope"}, "unknown quantization 'nope'"),
        ({"quantization": "product", "dims": 16, "budget_bytes": 8}, "budget_bytes must be in 1..4"),
    ],
)
def test_bad_targets_fail_before_any_work(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CompressionTarget(**kwargs)


def test_the_plan_round_trips_through_its_record():
    plan = CompressionTarget().plan(MINILM_LEXICAL, 5183)
    assert CompressionPlan.from_dict(plan.to_dict()) == plan
    assert "53 bytes a document, 48.3x" in plan.describe()
    old = {k: v for k, v in plan.to_dict().items() if k != "whole_output_coded"}  # recorded before round 14
    assert CompressionPlan.from_dict(old).whole_output_coded is False


def test_product_codes_of_the_whole_output_train_the_decoder_at_that_size_alone():
    """Product codes rotate the prefix they read, so the decoder's order within it is lost:
    the planned decoder is trained with the MRL loss at its full size only. Codes that read
    the outputs in order (fitted bits, a prefix of bit-sized codes), a fixed --out-dim, and
    strategies that work through the smaller sizes keep every prefix size; so does an explicit
    --out-dim, so that such a command line keeps its decoder and its run id. The explicit
    flags of the same index without --out-dim give the same decoder."""
    from dataclasses import replace

    from cecq.config import DecoderConfig

    base = PipelineConfig(corpus="c", store="s")
    plan = CompressionTarget().plan(MINILM_LEXICAL, 5183)
    assert plan.whole_output_coded
    decoder = plan.apply(base).decoder
    assert (decoder.out_dim, decoder.prefix_sizes, decoder.effective_prefix_sizes()) == (212, (212,), (212,))
    assert replace(decoder, out_dim=base.decoder.out_dim, prefix_sizes=base.decoder.prefix_sizes) == base.decoder
    for target, rows in (
        (CompressionTarget(), 1023),  # mixed: fitted bits give the leading dims more bits
        (CompressionTarget(bits=2), 5183),  # 212 dims of a 768-output decoder
        (CompressionTarget(out_dim=768, dims=212, budget_bytes=53, quantization="product"), 5183),  # 212 of 768
        (CompressionTarget(out_dim=212, budget_bytes=53, quantization="product"), 5183),  # --out-dim: as it always was
    ):
        other = target.plan(MINILM_LEXICAL, rows)
        assert not other.whole_output_coded
        assert other.apply(base).decoder.prefix_sizes == base.decoder.prefix_sizes
    explicit = CompressionTarget(dims=212, budget_bytes=53, quantization="product")
    assert explicit.plan(MINILM_LEXICAL, 5183).apply(base) == plan.apply(base)
    for strategy in ("sequential", "ads", "smec"):  # they shrink through, or select for, the smaller sizes
        config = replace(base, decoder=DecoderConfig().with_strategy(strategy))
        assert plan.apply(config).decoder.effective_prefix_sizes() == (32, 64, 128, 212)
    for strategy in ("mrl", "neighbours", "xbm"):
        config = replace(base, decoder=DecoderConfig().with_strategy(strategy))
        assert plan.apply(config).decoder.effective_prefix_sizes() == (212,)
