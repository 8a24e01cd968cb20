"""The MRL similarity loss, the decoder, its training, and its files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cecq.config import DecoderConfig
from cecq.decoder import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    Decoder,
    DimensionMismatchError,
    decode,
    load_decoder,
    mrl_similarity_loss,
    save_decoder,
    train_decoder,
    trimmed,
)
from cecq.errors import ConfigError

# --- loss -------------------------------------------------------------------------------


def identity_decoder(dim: int) -> Decoder:
    dec = Decoder(dim, dim, "linear")
    with torch.no_grad():
        dec.net.weight.copy_(torch.eye(dim))
        dec.net.bias.zero_()
    return dec


def test_loss_is_zero_for_identity_decoder_at_full_prefix():
    x = torch.nn.functional.normalize(torch.randn(10, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    dec = identity_decoder(16)
    with torch.no_grad():
        loss = mrl_similarity_loss(x, dec(x), [16])
    assert float(loss) == pytest.approx(0.0, abs=1e-10)
    # Scaling does not matter: cosine similarities are scale free.
    assert float(mrl_similarity_loss(x, 3.0 * x, [16])) == pytest.approx(0.0, abs=1e-10)


def test_loss_is_positive_when_similarities_change():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 16, generator=g)
    y = torch.randn(10, 16, generator=g)
    assert float(mrl_similarity_loss(x, y, [16])) > 1e-3
    # A prefix of the identity map loses information too.
    with torch.no_grad():
        assert float(mrl_similarity_loss(x, identity_decoder(16)(x), [4])) > 1e-3


def test_loss_matches_hand_computed_value_and_sums_over_prefixes():
    s = 1 / math.sqrt(2)
    inputs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # cos: c01=0, c02=s, c12=s
    outputs = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    # prefix 3: o01=s, o02=0, o12=1/2; each pair appears twice among the 6 off-diagonal cells
    full = 2 * ((s - 0) ** 2 + (0 - s) ** 2 + (0.5 - s) ** 2) / 6
    # prefix 1: rows (1), (1), (0): o01=1, o02=0, o12=0 (a zero row has zero similarity)
    first = 2 * ((1 - 0) ** 2 + (0 - s) ** 2 + (0 - s) ** 2) / 6
    assert float(mrl_similarity_loss(inputs, outputs, [3])) == pytest.approx(full, rel=1e-6)
    assert float(mrl_similarity_loss(inputs, outputs, [1])) == pytest.approx(first, rel=1e-6)
    assert float(mrl_similarity_loss(inputs, outputs, [1, 3])) == pytest.approx(first + full, rel=1e-6)
    assert float(mrl_similarity_loss(inputs, outputs, [3, 3])) == pytest.approx(2 * full, rel=1e-6)


def test_loss_excludes_the_diagonal():
    # Off-diagonal similarities agree (all 0) but the zero output row has a 0 self-similarity
    # where the input has 1: a loss that counted the diagonal would be 1/9.
    inputs = torch.eye(3)
    outputs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert float(mrl_similarity_loss(inputs, outputs, [3])) == pytest.approx(0.0, abs=1e-12)


def test_loss_needs_two_rows():
    with pytest.raises(ValueError):
        mrl_similarity_loss(torch.ones(1, 4), torch.ones(1, 4), [4])


def test_loss_has_gradients():
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))
    dec = Decoder(8, 8)
    mrl_similarity_loss(x, dec(x), [4, 8]).backward()
    assert dec.net.weight.grad is not None and torch.all(torch.isfinite(dec.net.weight.grad))
    assert float(dec.net.weight.grad.abs().sum()) > 0


# --- decoder module ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_decoder_shapes(kind):
    dec = Decoder(20, 12, kind, hidden_dim=16)
    assert dec(torch.randn(5, 20)).shape == (5, 12)
    linears = [m for m in dec.modules() if isinstance(m, torch.nn.Linear)]
    if kind == "linear":
        assert [(m.in_features, m.out_features) for m in linears] == [(20, 12)]
    else:
        assert [(m.in_features, m.out_features) for m in linears] == [(20, 16), (16, 12)]
    with pytest.raises(DimensionMismatchError):
        dec(torch.randn(5, 19))


def test_decoder_rejects_unknown_kind():
    with pytest.raises(ValueError):
        Decoder(4, 4, "transformer")
    with pytest.raises(ConfigError):
        DecoderConfig(kind="transformer")


def test_effective_prefix_sizes_fit_the_output():
    cfg = DecoderConfig(out_dim=100, prefix_sizes=(32, 64, 128, 256))
    assert cfg.effective_prefix_sizes() == (32, 64, 100)
    assert cfg.effective_prefix_sizes(16) == (16,)
    # a list is taken as the tuple it means: configs are hashed (cecq eval keys decoders by them)
    listed = DecoderConfig(out_dim=100, prefix_sizes=[32, 64, 128, 256])
    assert listed == cfg and hash(listed) == hash(cfg) and listed.prefix_sizes == (32, 64, 128, 256)


# --- training ------------------------------------------------------------------------------


def structured_data(n: int, dim: int = 48, rank: int = 6, seed: int = 0) -> np.ndarray:
    """Unit rows that live near a low-rank subspace: a decoder to few dims can keep their similarities."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(rank, dim))
    x = rng.normal(size=(n, rank)) @ basis + 0.05 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


FAST = dict(out_dim=12, prefix_sizes=(4, 8, 12), batch_size=64, lr=1e-2, init="random")


def held_out_loss(decoder: Decoder, x: np.ndarray, prefix_sizes) -> float:
    t = torch.from_numpy(x)
    with torch.no_grad():
        return float(mrl_similarity_loss(t, decoder(t), prefix_sizes))


def test_training_reduces_held_out_loss():
    data = structured_data(384, seed=0)
    x, held_out = data[:320], data[320:]  # same subspace; the held-out rows are never trained on
    cfg = DecoderConfig(**FAST, max_epochs=25, patience=25, seed=3)
    torch.manual_seed(cfg.seed)
    untrained = Decoder(x.shape[1], cfg.out_dim)
    decoder, stats = train_decoder(x, cfg, device="cpu")
    before = held_out_loss(untrained, held_out, cfg.effective_prefix_sizes())
    after = held_out_loss(decoder, held_out, cfg.effective_prefix_sizes())
    assert after < 0.3 * before, (before, after)
    assert stats.train_rows + stats.val_rows == 320
    assert stats.val_rows == 32
    assert len(stats.val_loss) == len(stats.train_loss) == stats.epochs
    assert stats.val_loss[-1] < stats.val_loss[0]
    assert stats.best_val_loss == min(stats.val_loss)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_training_is_reproducible_for_a_seed(kind):
    x = structured_data(96, seed=1)
    cfg = DecoderConfig(**FAST, kind=kind, hidden_dim=16, max_epochs=3, seed=7)
    a, sa = train_decoder(x, cfg, device="cpu")
    b, sb = train_decoder(x, cfg, device="cpu")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert sa.val_loss == sb.val_loss
    c, _ = train_decoder(x, DecoderConfig(**FAST, kind=kind, hidden_dim=16, max_epochs=3, seed=8), device="cpu")
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_early_stopping_and_best_weights_are_kept():
    # Unstructured data and a large learning rate: the validation loss stops improving soon.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(120, 16)).astype(np.float32)
    cfg = DecoderConfig(
        out_dim=8, prefix_sizes=(8,), batch_size=16, lr=0.5, max_epochs=60, patience=2, seed=0, init="random"
    )
    decoder, stats = train_decoder(x, cfg, device="cpu")
    assert stats.epochs < cfg.max_epochs
    assert stats.epochs == stats.best_epoch + cfg.patience
    assert stats.best_val_loss == pytest.approx(min(stats.val_loss))
    # The returned weights are the best epoch's: recompute the validation loss on the documented
    # split (a permutation from default_rng(seed), first round(n * val_fraction) rows held out).
    perm = np.random.default_rng(cfg.seed).permutation(len(x))
    val = x[perm[: round(len(x) * cfg.val_fraction)]]
    assert held_out_loss(decoder, val, cfg.effective_prefix_sizes()) == pytest.approx(stats.best_val_loss, rel=1e-4)


def test_pca_initialisation_starts_near_the_optimum_and_is_never_made_worse():
    from cecq.decoder import pca_initialise

    data = structured_data(384, seed=2)
    x, held_out = data[:320], data[320:]
    prefixes = (4, 8, 12)
    torch.manual_seed(0)
    random_start = Decoder(x.shape[1], 12)
    pca_start = Decoder(x.shape[1], 12)
    pca_initialise(pca_start, torch.from_numpy(x))
    w = pca_start.net.weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(12), atol=1e-4)  # orthonormal directions
    assert held_out_loss(pca_start, held_out, prefixes) < 0.2 * held_out_loss(random_start, held_out, prefixes)
    cfg = DecoderConfig(out_dim=12, prefix_sizes=prefixes, batch_size=64, lr=1e-2, max_epochs=5, patience=5, seed=0)
    trained, _stats = train_decoder(x, cfg, device="cpu")
    perm = np.random.default_rng(cfg.seed).permutation(len(x))
    n_val = round(len(x) * cfg.val_fraction)
    val, train_split = x[perm[:n_val]], x[perm[n_val:]]
    start = Decoder(x.shape[1], 12)
    pca_initialise(start, torch.from_numpy(train_split))  # train_decoder's starting point
    assert held_out_loss(trained, val, prefixes) <= held_out_loss(start, val, prefixes) + 1e-6
    with pytest.raises(ValueError, match="linear"):
        pca_initialise(Decoder(16, 8, "mlp", 8), torch.from_numpy(x))


def test_training_rejects_bad_inputs():
    cfg = DecoderConfig(**FAST, max_epochs=1)
    with pytest.raises(ValueError):
        train_decoder(np.zeros((4, 8), np.float32), cfg)
    bad = structured_data(32)
    bad[3, 2] = np.nan
    with pytest.raises(ValueError):
        train_decoder(bad, cfg)


# --- decode / save / load ------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    dec = Decoder(24, 10, "mlp", hidden_dim=16)
    save_decoder(dec, tmp_path / "dec", metadata={"models": ["a", "b"], "best_val_loss": np.float32(0.25)})
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    cfg = json.loads((tmp_path / "dec" / CONFIG_FILE).read_text())
    assert cfg["in_dim"] == 24 and cfg["out_dim"] == 10 and cfg["kind"] == "mlp" and cfg["models"] == ["a", "b"]
    loaded, meta = load_decoder(tmp_path / "dec", expected_in_dim=24)
    assert meta["models"] == ["a", "b"]
    x = structured_data(30, dim=24)
    np.testing.assert_array_equal(decode(dec, x), decode(loaded, x))
    np.testing.assert_array_equal(decode(dec, x, 4), decode(loaded, x, 4))


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_a_trimmed_decoder_stores_only_the_prefix_and_decodes_it_bit_for_bit(kind, tmp_path):
    """What an index whose codes read 4 of 10 outputs stores: the last layer's first 4 rows."""
    torch.manual_seed(0)
    dec = Decoder(24, 10, kind, hidden_dim=16)
    small = trimmed(dec, 4)
    assert (small.in_dim, small.out_dim, small.kind) == (24, 4, kind)
    full_params = sum(v.numel() for v in dec.state_dict().values())
    last = dec.net if kind == "linear" else dec.net[-1]
    assert sum(v.numel() for v in small.state_dict().values()) == full_params - 6 * (last.in_features + 1)
    x = structured_data(30, dim=24)
    x[3] = 0.0
    save_decoder(small, tmp_path / "dec")
    loaded, meta = load_decoder(tmp_path / "dec", expected_in_dim=24)
    assert meta["out_dim"] == 4
    np.testing.assert_array_equal(decode(loaded, x), decode(dec, x, 4))
    np.testing.assert_array_equal(decode(loaded, x, 2), decode(dec, x, 2))
    with pytest.raises(ValueError, match=r"outside 1\.\.4"):
        decode(loaded, x, 5)  # the dropped rows are gone, not silently zero
    with pytest.raises(ValueError, match=r"outside 1\.\.10"):
        trimmed(dec, 11)


def test_load_with_wrong_input_dim_raises(tmp_path):
    save_decoder(Decoder(24, 10), tmp_path, metadata={"models": ["m1", "m2"]})
    with pytest.raises(DimensionMismatchError, match="24") as err:
        load_decoder(tmp_path, expected_in_dim=32)
    assert "32" in str(err.value) and "m1" in str(err.value)
    with pytest.raises(FileNotFoundError):
        load_decoder(tmp_path / "missing")


def test_decode_wrong_dim_has_helpful_message():
    dec = Decoder(24, 10)
    with pytest.raises(DimensionMismatchError) as err:
        decode(dec, np.zeros((3, 20), np.float32))
    msg = str(err.value)
    assert "24" in msg and "20" in msg and "same base models" in msg
    with pytest.raises(DimensionMismatchError):
        decode(dec, np.zeros(24, np.float32))  # 1-D input


def test_decode_normalises_prefixes_and_keeps_zero_rows_zero():
    torch.manual_seed(0)
    dec = Decoder(24, 10)
    x = structured_data(40, dim=24)
    x[[0, 7]] = 0.0
    full = decode(dec, x)
    assert full.shape == (40, 10) and full.dtype == np.float32
    assert np.all(full[[0, 7]] == 0.0)
    norms = np.linalg.norm(np.delete(full, [0, 7], axis=0), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    # The d-prefix is the normalised first d outputs of the raw decoder.
    with torch.no_grad():
        raw = dec(torch.from_numpy(x)).numpy()[:, :4]
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    expected[[0, 7]] = 0.0
    np.testing.assert_allclose(decode(dec, x, 4), expected, atol=1e-6)
    # Batching does not change the result.
    np.testing.assert_allclose(decode(dec, x, 4, batch_size=3), decode(dec, x, 4), atol=1e-6)
    for bad in (0, 11):
        with pytest.raises(ValueError):
            decode(dec, x, bad)
