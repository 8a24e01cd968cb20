"""Decoder training strategies: neighbour-weighted loss, sequential MRL, adaptive dimension
selection (ADS) and the cross-batch memory (S-XBM), on tiny random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cecq.config import STRATEGIES, DecoderConfig, EvalConfig
from cecq.decoder import (
    Decoder,
    MemoryQueue,
    apply_selection,
    decode,
    load_decoder,
    memory_loss,
    mrl_similarity_loss,
    neighbour_pair_weights,
    save_decoder,
    selection_views,
    train_decoder,
    training_stages,
)
from cecq.errors import ConfigError

# Tiny tensors gain nothing from threads (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def unit_rows(n: int, dim: int, seed: int = 0, rank: int | None = None) -> np.ndarray:
    """Random unit rows; with ``rank``, near a random ``rank``-dim subspace (so a small decoder can learn them)."""
    rng = np.random.default_rng(seed)
    x = (
        rng.normal(size=(n, dim))
        if rank is None
        else rng.normal(size=(n, rank)) @ rng.normal(size=(rank, dim)) + 0.05 * rng.normal(size=(n, dim))
    )
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


TINY = dict(out_dim=12, prefix_sizes=(4, 8, 12), batch_size=32, lr=1e-2, init="random", max_epochs=3, patience=3)

# --- neighbour-weighted loss ---------------------------------------------------------------


def test_neighbour_weights_boost_each_rows_nearest():
    target = torch.tensor([[1.0, 0.9, 0.1, 0.5], [0.9, 1.0, 0.2, 0.3], [0.1, 0.2, 1.0, 0.8], [0.5, 0.3, 0.8, 1.0]])
    w = neighbour_pair_weights(target, neighbours=1, boost=3.0)
    assert torch.equal(w.diagonal(), torch.zeros(4))
    expected = torch.ones(4, 4).fill_diagonal_(0)
    for row, nearest in enumerate([1, 0, 3, 2]):
        expected[row, nearest] = 4.0
    assert torch.equal(w, expected)
    # No boost (or no neighbours) is the plain off-diagonal mean.
    assert torch.equal(neighbour_pair_weights(target), torch.ones(4, 4).fill_diagonal_(0))


def test_uniform_weights_give_the_plain_loss_and_boost_changes_it():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 8, generator=g), torch.randn(16, 6, generator=g)
    plain = mrl_similarity_loss(x, y, [3, 6])
    uniform = mrl_similarity_loss(x, y, [3, 6], pair_weights=torch.ones(16, 16).fill_diagonal_(0) * 7)
    assert float(uniform) == pytest.approx(float(plain), rel=1e-6)
    boosted = mrl_similarity_loss(x, y, [3, 6], pair_weights=neighbour_pair_weights(x @ x.T, 3, 10.0))
    assert float(boosted) != pytest.approx(float(plain), rel=1e-3)


# --- sequential MRL ------------------------------------------------------------------------


def test_training_stages():
    assert training_stages([4, 8, 12], sequential=False) == [((12, 8, 4), 12)]
    assert training_stages([8, 4, 12], sequential=True) == [((12,), 12), ((12, 8), 8), ((12, 8, 4), 4)]


def test_sequential_mrl_freezes_the_dims_each_stage_drops():
    x = unit_rows(120, 16, seed=1, rank=6)
    cfg = DecoderConfig(**TINY, sequential=True, weight_decay=0.1, seed=2)  # decay would move unfrozen rows
    full, stats = train_decoder(x, cfg, device="cpu")
    assert stats.stages == [12, 8, 4]
    # The same seed with fewer sizes runs exactly the first stages: their results must survive.
    after_first, _ = train_decoder(
        x, DecoderConfig(**{**TINY, "prefix_sizes": (12,)}, sequential=True, weight_decay=0.1, seed=2), device="cpu"
    )
    after_second, _ = train_decoder(
        x, DecoderConfig(**{**TINY, "prefix_sizes": (8, 12)}, sequential=True, weight_decay=0.1, seed=2), device="cpu"
    )
    w, w1, w2 = full.net.weight.detach(), after_first.net.weight.detach(), after_second.net.weight.detach()
    assert torch.equal(w[8:], w1[8:]) and torch.equal(full.net.bias[8:], after_first.net.bias[8:])
    assert torch.equal(w[4:8], w2[4:8]) and torch.equal(full.net.bias[4:8], after_second.net.bias[4:8])
    assert not torch.equal(w[:8], w1[:8])  # the shared rows did train after the first stage
    assert not torch.equal(w[:4], w2[:4])


def test_sequential_needs_a_linear_decoder():
    with pytest.raises(ConfigError, match="linear"):
        DecoderConfig(kind="mlp", sequential=True)


# --- adaptive dimension selection -----------------------------------------------------------


def test_selection_views_gate_the_most_important_dims():
    out = torch.ones(3, 6)
    importance = torch.tensor([0.0, 5.0, 1.0, 4.0, -1.0, 3.0])
    [two, six] = selection_views(out, [2, 6], importance, temperature=0.01)
    assert torch.allclose(two[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 0.0]), atol=1e-6)
    assert torch.equal(six, out)
    assert [v.shape for v in selection_views(out, [2, 6])] == [(3, 2), (3, 6)]  # prefixes without importance


def test_importance_receives_gradients_at_the_cut():
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    importance = torch.tensor([0.0, -0.01, -0.02, -0.03, -0.04, -0.05], requires_grad=True)
    mrl_similarity_loss(x, x, [3, 6], importance=importance).backward()
    assert importance.grad is not None and float(importance.grad.abs().sum()) > 0


def test_apply_selection_makes_prefixes_the_most_important_dims(tmp_path):
    torch.manual_seed(0)
    dec = Decoder(10, 6)
    x = unit_rows(20, 10)
    raw = dec(torch.from_numpy(x)).detach().numpy()
    importance = torch.tensor([0.1, 0.9, -0.3, 0.5, 0.0, 0.7])
    assert apply_selection(dec, importance) == [1, 5, 3, 0, 4, 2]
    picked = raw[:, [1, 5, 3]]
    np.testing.assert_allclose(
        decode(dec, x, 3), picked / np.linalg.norm(picked, axis=1, keepdims=True), rtol=1e-5, atol=1e-6
    )
    save_decoder(dec, tmp_path, {"dim_order": [1, 5, 3, 0, 4, 2]})
    loaded, meta = load_decoder(tmp_path)
    np.testing.assert_array_equal(decode(loaded, x, 3), decode(dec, x, 3))
    assert meta["dim_order"] == [1, 5, 3, 0, 4, 2]


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_ads_training_orders_outputs_by_learned_importance(kind):
    x = unit_rows(96, 16, seed=3)
    dec, stats = train_decoder(x, DecoderConfig(**TINY, kind=kind, hidden_dim=8, selection="ads", seed=0), device="cpu")
    assert sorted(stats.dim_order) == list(range(12))
    assert decode(dec, x, 4).shape == (96, 4)


# --- cross-batch memory ---------------------------------------------------------------------


def test_memory_queue_is_fifo_of_the_newest_rows():
    q = MemoryQueue(5, 2)
    assert len(q) == 0 and q.rows().shape == (0, 2)
    rows = torch.arange(20, dtype=torch.float32).reshape(10, 2)  # row i = (2i, 2i + 1)
    q.enqueue(rows[:3])
    assert len(q) == 3 and torch.equal(q.rows(), rows[:3])
    q.enqueue(rows[3:7])  # 7 rows seen: the oldest 2 fall out
    assert len(q) == 5 and torch.equal(q.rows(), rows[2:7])
    q.enqueue(rows[7:8])
    assert torch.equal(q.rows(), rows[3:8])
    q.enqueue(rows)  # more than the queue holds at once
    assert torch.equal(q.rows(), rows[5:])
    with pytest.raises(ValueError):
        MemoryQueue(0, 2)


def test_memory_loss_on_hard_neighbours():
    g = torch.Generator().manual_seed(0)
    x, memory = torch.randn(4, 8, generator=g), torch.randn(10, 8, generator=g)
    # Outputs that keep every similarity: no loss, whichever neighbours are picked.
    assert float(memory_loss(x, 2 * x, memory, 2 * memory, [8], neighbours=3)) == pytest.approx(0.0, abs=1e-10)
    # Copies of a batch row in the memory are not its neighbours: a memory of copies costs nothing.
    copies = x[:1].repeat(3, 1)
    assert float(memory_loss(x[:1], torch.randn(1, 8, generator=g), copies, copies, [8], 2)) == 0.0
    y = torch.randn(4, 8, generator=g, requires_grad=True)
    loss = memory_loss(x, y, memory, memory, [4, 8], neighbours=3)
    loss.backward()
    assert loss.item() > 0 and y.grad is not None


def test_training_with_memory_runs_and_validates():
    x = unit_rows(128, 16, seed=4)
    _dec, stats = train_decoder(x, DecoderConfig(**TINY, memory_size=48, memory_neighbours=4), device="cpu")
    assert stats.epochs >= 1 and np.isfinite(stats.best_val_loss)
    with pytest.raises(ConfigError, match="memory_neighbours"):
        DecoderConfig(memory_size=8, memory_neighbours=9)
    with pytest.raises(ConfigError):
        DecoderConfig(memory_size=-1)


# --- presets -------------------------------------------------------------------------------


def test_strategies_are_valid_configs_and_unknown_names_fail():
    for name in STRATEGIES:
        cfg = DecoderConfig().with_strategy(name)
        assert cfg.out_dim == DecoderConfig().out_dim
    assert DecoderConfig().with_strategy("smec").sequential and DecoderConfig().with_strategy("smec").selection == "ads"
    with pytest.raises(ConfigError, match="unknown strategy"):
        DecoderConfig().with_strategy("magic")
    with pytest.raises(ConfigError, match="unknown strategy"):
        EvalConfig(strategies=("magic",))
    with pytest.raises(ConfigError, match="linear"):  # caught before any embedding
        EvalConfig(decoder=DecoderConfig(kind="mlp"), strategies=("sequential",))
    with pytest.raises(ConfigError):
        DecoderConfig(loss="hinge")
    with pytest.raises(ConfigError):
        DecoderConfig(selection="random")
