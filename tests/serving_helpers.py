"""A real uvicorn server on a free loopback port, in a thread of the test process, and detector
wrappers that make batching and slow model calls observable."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def running_server(app, *, start_timeout_s: float = 30.0) -> Iterator[str]:
    """Serves ``app`` on 127.0.0.1 at a port the OS picks; yields the base URL.

    The socket is bound before uvicorn starts, so no other process can take the port in between.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class CountingDetector:
    """Wraps a Detector: records the size of every ``predict`` call, optionally holding each call
    until ``gate`` is set, so a test can see batching and keep the model busy on purpose.

    It has no ``explain``, which also makes it a detector without heatmaps.
    """

    def __init__(self, detector, *, gate: threading.Event | None = None) -> None:
        self._detector = detector
        self.gate = gate
        self.call_sizes: list[int] = []
        self.entered = threading.Event()  # set when a predict call has started

    def __getattr__(self, name):
        if name == "explain":
            raise AttributeError(name)
        return getattr(self._detector, name)

    def predict(self, images, **kwargs):
        self.call_sizes.append(len(images))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(timeout=30)
        return self._detector.predict(images, **kwargs)
