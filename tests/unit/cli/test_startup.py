"""The CLI's start of a run: the temporary Prefect server and Ray start together (each
waits here for the other to have begun), an error of either is raised, and a configured
Prefect API means no temporary server."""

from __future__ import annotations

import threading

import pytest

import flows.startup as startup


class _Setting:
    def __init__(self, value):
        self._value = value

    def value(self):
        return self._value


def _fakes(monkeypatch, api_url=None, server_error=None):
    ray_started, server_started, calls = threading.Event(), threading.Event(), []

    class Server:
        def start(self):
            server_started.set()
            calls.append("server")
            # Only returns once Ray has begun: one after another, this would wait in vain.
            assert ray_started.wait(10), "Ray did not start while the server started"
            if server_error:
                raise server_error

    def init_ray(address):
        ray_started.set()
        calls.append(f"ray {address}")
        if api_url is None:
            assert server_started.wait(10), "the server did not start while Ray started"

    monkeypatch.setattr(startup, "PREFECT_API_URL", _Setting(api_url))
    monkeypatch.setattr(startup, "SubprocessASGIServer", Server)
    monkeypatch.setattr(startup, "init_ray", init_ray)
    return calls


def test_the_prefect_server_and_ray_start_together(monkeypatch):
    calls = _fakes(monkeypatch)
    startup.start_services("ray://head:10001")
    assert sorted(calls) == ["ray ray://head:10001", "server"]


def test_a_server_that_fails_to_start_is_an_error_of_the_run(monkeypatch):
    _fakes(monkeypatch, server_error=RuntimeError("Timed out while attempting to connect"))
    with pytest.raises(RuntimeError, match="Timed out"):
        startup.start_services(None)


def test_a_configured_prefect_api_starts_no_server(monkeypatch):
    calls = _fakes(monkeypatch, api_url="http://127.0.0.1:4200/api")
    startup.start_services(None)
    assert calls == ["ray None"]
