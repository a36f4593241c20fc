"""A real uvicorn server on a free loopback port, in a thread of the test process, and detector
wrappers that make batching and slow model calls observable."""

from __future__ import annotations

import socket
import tempfile
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


def free_port() -> int:
    """A loopback port free right now (a server started next binds it; a test accepts the small race)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_serve_process(model, port: int, *flags: str):
    """``deepfake-detector serve`` as a child process on 127.0.0.1:``port``: a crash, a kill or a leak
    of the server is then the server's alone, visible to the test that watches it."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "deepfake_detector", "serve", "--model", str(model), "--device", "cpu"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *flags]
    # Its log goes to a file, not a pipe: a pipe nobody reads fills up and blocks the server.
    log = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (closed by stop_process)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    process.log = log
    return process


def server_log(process) -> str:
    """What a `start_serve_process` server has written so far."""
    process.log.flush()
    process.log.seek(0)
    return process.log.read()


def wait_ready(url: str, process, *, timeout_s: float = 180.0) -> None:
    """Polls ``/readyz`` until the server answers 200; fails with its stderr if it exits first."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{server_log(process)}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server at {url} was not ready within {timeout_s:g} s")


def stop_process(process, *, timeout_s: float = 20.0) -> None:
    """Asks the server to stop (SIGINT, as Ctrl-C), then kills it if it lingers."""
    import signal
    import subprocess

    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)
    process.log.close()


@contextmanager
def served_process(model, *flags: str, port: int | None = None) -> Iterator[tuple[str, object]]:
    """A ready ``serve`` child process; yields its base URL and the `subprocess.Popen`."""
    port = port or free_port()
    process = start_serve_process(model, port, *flags)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process)
        yield url, process
    finally:
        stop_process(process)


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident memory so far (Linux ``VmHWM``), else its current RSS."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return psutil.Process(pid).memory_info().rss
