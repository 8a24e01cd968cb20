"""A TCP proxy that injects faults between a client and a real server (here: moto's S3).

Each new connection is handled by the proxy's current mode:

- ``"pass"``: bytes are forwarded both ways;
- ``"reset"``: the connection is closed at once (the server looks unreachable);
- ``"503"``: the HTTP request is read and answered with ``503 Slow Down``, never forwarded;
- ``"delay"``: forwarded after ``delay`` seconds (a slow server).

``fail(n, mode)`` applies ``mode`` to the next ``n`` connections (or HTTP requests) only.
"""

from __future__ import annotations

import socket
import threading
import time

SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
)
SLOW_DOWN_BODY = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FaultProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.delay = 0.0
        self._budget: int | None = None  # connections left in a temporary mode
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._live: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, mode: str, delay: float = 0.0) -> None:
        with self._lock:
            self.mode, self.delay, self._budget = mode, delay, None
        self._drop_live()

    def fail(self, n: int, mode: str = "503") -> None:
        with self._lock:
            self.mode, self._budget = mode, n
        self._drop_live()

    def _drop_live(self) -> None:
        """Cut open (kept-alive) connections, so that the next request meets the new mode."""
        with self._lock:
            live, self._live = list(self._live), set()
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _next_mode(self) -> str:
        with self._lock:
            mode = self.mode
            if self._budget is not None:
                self._budget -= 1
                if self._budget <= 0:
                    self.mode, self._budget = "pass", None
            self.counts[mode] = self.counts.get(mode, 0) + 1
            return mode

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        mode = self._next_mode()
        try:
            if mode == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()
                return
            if mode == "503":
                self._answer_slow_down(client)
                return
            if mode == "delay":
                time.sleep(self.delay)
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        with self._lock:
            self._live.update((client, upstream))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _answer_slow_down(client: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = [line.lower() for line in head.split(b"\r\n")]
        length = next((int(line.split(b":", 1)[1]) for line in lines if line.startswith(b"content-length:")), 0)
        if any(line.startswith(b"expect:") and b"100-continue" in line for line in lines):
            length = 0  # the client waits for our answer before it sends the body
        while len(body) < length:  # drain the body so the client sees the answer, not a reset
            chunk = client.recv(65536)
            if not chunk:
                break
            body += chunk
        client.sendall(SLOW_DOWN % (len(SLOW_DOWN_BODY), SLOW_DOWN_BODY))
        client.close()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
