"""Progress in units of work with rate and ETA: throttled meters, a bar on a terminal, log
lines elsewhere, and the decoder's epochs with their validation loss."""

from __future__ import annotations

import io

import numpy as np

from cecq.progress import Meter, ProgressUpdate, TerminalBar, console_sink, installed_sink, log_sink, reporting_to


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_meter_reports_the_first_count_then_every_interval_and_always_the_last():
    clock, seen = Clock(), []
    meter = Meter("embed m", "documents", seen.append, interval=2.0, clock=clock)
    meter(0, 1000)
    for done in range(100, 1000, 100):
        clock.now += 0.5
        meter(done, 1000)
    clock.now += 0.5
    meter(1000, 1000)
    meter(1000, 1000)  # a repeated final count is not reported twice
    assert [u.done for u in seen] == [0, 400, 800, 1000]
    last = seen[-1]
    assert last.finished and last.elapsed == 5.0 and last.rate == 200.0 and last.eta == 0.0


def test_an_update_says_counts_rate_and_eta():
    u = ProgressUpdate("embed all-MiniLM-L6-v2", 1200, 5183, "documents", 12.0)
    assert u.line() == "embed all-MiniLM-L6-v2: 1,200/5,183 documents (23%), 100.0 documents/s, ETA 40 s"
    u = ProgressUpdate("train decoder", 2.5, 20, "epochs", 5.0, "val loss 0.01234")
    assert u.line() == "train decoder: 2.5/20 epochs (12%), 0.5 epochs/s, ETA 35 s; val loss 0.01234"
    assert "ETA ?" in ProgressUpdate("x", 0, 10, "documents", 0.0).line()
    assert "ETA 1 h 23 min" in ProgressUpdate("x", 1, 5001, "documents", 1.0).line()


def test_a_terminal_gets_a_bar_and_anything_else_log_lines():
    tty = io.StringIO()
    tty.isatty = lambda: True  # type: ignore[method-assign]
    sink = console_sink(tty)
    assert isinstance(sink, TerminalBar)
    sink(ProgressUpdate("compress", 50, 100, "documents", 1.0))
    sink(ProgressUpdate("compress", 100, 100, "documents", 2.0))
    assert tty.getvalue().startswith("\r\033[Kcompress [############------------] 50/100 documents (50%)")
    assert tty.getvalue().endswith("done\n")
    plain = io.StringIO()
    sink = console_sink(plain)
    assert not isinstance(sink, TerminalBar)
    sink(ProgressUpdate("compress", 50, 100, "documents", 1.0))
    sink(ProgressUpdate("compress", 60, 100, "documents", 1.2))  # within LOG_SECONDS: not logged
    sink(ProgressUpdate("compress", 100, 100, "documents", 2.0))
    assert plain.getvalue().splitlines() == [
        "compress: 50/100 documents (50%), 50.0 documents/s, ETA 1 s",
        "compress: 100/100 documents (100%), 50.0 documents/s, done",
    ]


def test_an_installed_sink_is_found_inside_the_block_only():
    lines: list[str] = []
    sink = log_sink(lines.append)
    assert installed_sink() is None
    with reporting_to(sink):
        assert installed_sink() is sink
    assert installed_sink() is None


def test_decoder_training_reports_epochs_and_validation_loss(one_torch_thread):
    from cecq.config import DecoderConfig
    from cecq.decoder import train_decoder

    x = np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32)
    seen: list[tuple[float, float, str]] = []
    _, stats = train_decoder(
        x,
        DecoderConfig(out_dim=8, prefix_sizes=(4, 8), max_epochs=3, batch_size=32),
        progress=lambda *a: seen.append(a),
    )
    assert all(total == 3.0 for _, total, _ in seen)
    assert any(0 < done < 1 for done, _, _ in seen)  # within the first epoch
    assert any("val loss" in detail for _, _, detail in seen)
    assert seen[-1][0] == 3.0 and f"{stats.epochs} epochs" in seen[-1][2]
