"""The server under overload, hostile files, a kill and a soak: real HTTP, real files, bounded in time.

Overload runs against an in-process server whose model call a test can hold; the hostile corpus, the
restart and the soak run against ``deepfake-detector serve`` as a child process, so a crash, a kill or
a memory leak is the server's alone and the test sees it.
"""

from __future__ import annotations

import importlib.util
import io
import random
import signal
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx", reason="the dev extra is not installed: pip install -e '.[dev]'")

from deepfake_detector import Detector  # noqa: E402
from deepfake_detector.serving.app import build_app  # noqa: E402
from deepfake_detector.serving.config import ServeConfig  # noqa: E402

from .conftest import jpeg_bytes  # noqa: E402
from .serving_helpers import (  # noqa: E402
    CountingDetector,
    free_port,
    peak_rss_bytes,
    running_server,
    served_process,
    server_log,
    start_serve_process,
    stop_process,
    wait_ready,
)

# Generous bounds that only a hang reaches; nothing here measures speed.
REQUEST_TIMEOUT_S = 60
SETTLE_TIMEOUT_S = 15
PROCESS_FLAGS = ("--max-pixels", "4000000", "--max-upload-bytes", "4000000", "--queue-size", "8")


@pytest.fixture(scope="module")
def detector(seed_checkpoint) -> Detector:
    return Detector.from_pretrained(seed_checkpoint, device="cpu")


def post_image(url: str, data: bytes, name: str = "a.jpg", content_type: str = "image/jpeg", **kwargs):
    return httpx.post(
        f"{url}/v1/predict", files={"images": (name, data, content_type)}, timeout=REQUEST_TIMEOUT_S, **kwargs
    )


def wait_for(condition, what: str, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.05)


def in_flight(url: str) -> int:
    return httpx.get(f"{url}/v1/stats", timeout=5).json()["in_flight_requests"]


def raw_upload(url: str, data: bytes, *, declared_bytes: int | None = None) -> socket.socket:
    """A raw connection posting ``data`` as one image to /v1/predict; a ``declared_bytes`` above the
    body's size makes an upload that stops partway, the connection left open."""
    host, port = url.removeprefix("http://").split(":")
    boundary = "raw-upload"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="raw.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: {declared_bytes or len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    ).encode()
    sock = socket.create_connection((host, int(port)), timeout=REQUEST_TIMEOUT_S)
    sock.sendall(head + body)
    return sock


def partial_upload(url: str) -> socket.socket:
    return raw_upload(url, b"\xff" * 20_000, declared_bytes=500_000)


# --- overload ------------------------------------------------------------------------------------


def test_a_burst_beyond_the_queue_is_refused_at_once_with_retry_after_then_served(detector):
    gate = threading.Event()
    slow = CountingDetector(detector, gate=gate)
    config = ServeConfig(queue_size=2, max_batch_wait_ms=0)
    image = jpeg_bytes(seed=1)
    with running_server(build_app(slow, config)) as url, ThreadPoolExecutor(10) as pool:
        admitted = [pool.submit(post_image, url, image, f"admitted-{index}.jpg") for index in range(2)]
        wait_for(lambda: in_flight(url) == 2, "both requests admitted")  # one scored, one waiting
        try:
            # Each answered while the model is still held: refused before its body is read, no hang.
            refused = list(pool.map(lambda index: post_image(url, image, f"{index}.jpg"), range(8)))
        finally:
            gate.set()
        assert [response.status_code for response in refused] == [503] * 8
        for response in refused:
            assert response.json()["error"]["code"] == "queue_full"
            assert response.headers["retry-after"] == str(ServeConfig().retry_after_s)
        assert [future.result(timeout=REQUEST_TIMEOUT_S).status_code for future in admitted] == [200, 200]
        stats = httpx.get(f"{url}/v1/stats", timeout=5).json()
        assert stats["in_flight_requests"] == 0 and stats["rejected_queue_full"] == 8
        assert post_image(url, image).status_code == 200  # the burst left nothing behind


def test_a_client_that_disconnects_mid_upload_frees_its_slot(detector):
    with running_server(build_app(detector, ServeConfig(queue_size=1))) as url:
        for _ in range(3):  # more uploads than the queue holds: a leaked slot would refuse the next
            with partial_upload(url):
                wait_for(lambda: in_flight(url) == 1, "the partial upload admitted")
            wait_for(lambda: in_flight(url) == 0, "the slot freed after the client went away")
        assert post_image(url, jpeg_bytes()).status_code == 200


def test_a_client_that_leaves_while_its_images_wait_frees_its_slot_and_its_place_in_the_batch(detector):
    gate = threading.Event()
    slow = CountingDetector(detector, gate=gate)
    with running_server(build_app(slow, ServeConfig(queue_size=2, max_batch_wait_ms=0))) as url:
        with ThreadPoolExecutor(1) as pool:
            try:
                held = pool.submit(post_image, url, jpeg_bytes(seed=1), "held.jpg")
                assert slow.entered.wait(timeout=SETTLE_TIMEOUT_S)  # the model is busy with it
                # A whole upload this time: its image is decoded, waits for the model, and is abandoned.
                with raw_upload(url, jpeg_bytes(seed=2)):
                    wait_for(lambda: in_flight(url) == 2, "the second request waiting")
                wait_for(lambda: in_flight(url) == 1, "its slot freed while the model is still busy")
            finally:
                gate.set()
            assert held.result(timeout=REQUEST_TIMEOUT_S).status_code == 200
        assert slow.call_sizes == [1]  # the abandoned image never reached the model
        assert post_image(url, jpeg_bytes()).status_code == 200


def test_a_stalled_upload_holds_its_slot_no_longer_than_the_request_deadline(detector):
    config = ServeConfig(queue_size=1, request_timeout_s=5.0)
    with running_server(build_app(detector, config)) as url:
        with partial_upload(url) as stalled:
            wait_for(lambda: in_flight(url) == 1, "the stalled upload admitted")
            assert post_image(url, jpeg_bytes()).status_code == 503  # its slot is taken...
            wait_for(lambda: in_flight(url) == 0, "the slot freed at the deadline")  # ...until then
            assert stalled.recv(4096).startswith(b"HTTP/1.1 504")
        assert post_image(url, jpeg_bytes()).status_code == 200


# --- hostile files -------------------------------------------------------------------------------


def png_bytes(width: int = 64, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_chunks(png: bytes, *chunks: bytes) -> bytes:
    """``png`` with ``chunks`` inserted just before its IEND chunk (the last 12 bytes)."""
    return png[:-12] + b"".join(chunks) + png[-12:]


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_with_segments(jpeg: bytes, *segments: bytes) -> bytes:
    """``jpeg`` with ``segments`` right after its start-of-image marker."""
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def deflate_bomb(size_bytes: int) -> bytes:
    """``size_bytes`` of zeros, zlib-compressed (about a thousandth of that), built without holding them."""
    compressor = zlib.compressobj(9)
    block = b"\x00" * 1_048_576
    parts = [compressor.compress(block) for _ in range(size_bytes // len(block))]
    return b"".join(parts) + compressor.flush()


def jumbf_box(claimed_bytes: int) -> bytes:
    """A JUMBF superbox whose extended length claims ``claimed_bytes``, followed by a few real bytes."""
    description = struct.pack(">I", 8 + 16 + 1 + 6) + b"jumd" + b"c2pa" + b"\x00" * 12 + b"\x03c2pa\x00"
    return struct.pack(">I", 1) + b"jumb" + struct.pack(">Q", claimed_bytes) + description + b"\x00" * 64


def exif_with_looping_ifd(entry_count: int) -> bytes:
    """Little-endian TIFF/EXIF whose first IFD claims ``entry_count`` entries of huge data and links to
    itself as the next IFD."""
    entries = struct.pack("<HHII", 0x010E, 2, 0x7FFFFFFF, 8)  # ImageDescription, 2 GB of ASCII
    entries += struct.pack("<HHII", 0x8769, 4, 1, 8)  # an EXIF sub-IFD pointing back at this one
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", entry_count) + entries + struct.pack("<I", 8)


def nested_xmp(depth: int) -> bytes:
    open_tags = "<rdf:Description>" * depth
    close_tags = "</rdf:Description>" * depth
    inside = f'DigitalSourceType="{"x" * 300}'
    return f'<x:xmpmeta xmlns:x="adobe:ns:meta/">{open_tags}{inside}{close_tags}</x:xmpmeta>'.encode()


def mutate(data: bytes, seed: int, flips: int) -> bytes:
    rng = random.Random(seed)
    changed = bytearray(data)
    for _ in range(flips):
        position = rng.randrange(2, len(changed))  # keep the magic bytes, so a decoder is tried
        changed[position] ^= 1 << rng.randrange(8)
    return bytes(changed)


def hostile_corpus(tmp_path: Path) -> dict[str, bytes]:
    """Files a fuzzer or an attacker would send, each named for what is wrong with it."""
    jpeg = jpeg_bytes(96, 128, seed=7)
    png = png_bytes()
    sof = jpeg.index(b"\xff\xc0")
    huge_header = struct.pack(">IIBBBBB", 2**31 - 1, 2**31 - 1, 8, 2, 0, 0, 0)  # RGB, 8 bits
    corpus = {
        **{f"bitflip-jpeg-{seed}": mutate(jpeg, seed, 40) for seed in range(4)},
        **{f"bitflip-png-{seed}": mutate(png, seed, 8) for seed in range(2)},
        **{f"truncated-jpeg-{percent}": jpeg[: len(jpeg) * percent // 100] for percent in (5, 50, 95)},
        "truncated-png": png[: len(png) // 2],
        "spliced-jpeg-png": jpeg[: len(jpeg) // 2] + png[len(png) // 2 :],
        "spliced-random-bytes": jpeg[:500] + random.Random(1).randbytes(4000) + jpeg[500:],
        "jpeg-claims-65500x65500": jpeg[: sof + 5] + struct.pack(">HH", 65500, 65500) + jpeg[sof + 9 :],
        "jpeg-claims-0x0": jpeg[: sof + 5] + struct.pack(">HH", 0, 0) + jpeg[sof + 9 :],
        "jpeg-no-soi": b"\x00\x00" + jpeg[2:],
        "png-claims-2^31": png[:8] + png_chunk(b"IHDR", huge_header) + png[33:],
        "png-ihdr-bad-crc": png[:29] + b"\x00\x00\x00\x00" + png[33:],
        "png-ztxt-bomb": png_with_chunks(
            png, png_chunk(b"zTXt", b"Comment\x00\x00" + deflate_bomb(256 << 20))
        ),
        "png-itxt-xmp-bomb": png_with_chunks(
            png, png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + deflate_bomb(128 << 20))
        ),
        "png-many-text-chunks": png_with_chunks(
            png, *(png_chunk(b"tEXt", b"parameters\x00" + b"p" * 2000) for _ in range(1500))
        ),
        "png-nested-xmp": png_with_chunks(
            png, png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + nested_xmp(20_000))
        ),
        "jpeg-nested-xmp": jpeg_with_segments(
            jpeg, jpeg_segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + nested_xmp(1500)[:65_000])
        ),
        "jpeg-looping-exif": jpeg_with_segments(
            jpeg, jpeg_segment(0xE1, b"Exif\x00\x00" + exif_with_looping_ifd(2))
        ),
        "jpeg-exif-65535-entries": jpeg_with_segments(
            jpeg, jpeg_segment(0xE1, b"Exif\x00\x00" + exif_with_looping_ifd(65535))
        ),
        "png-looping-exif": png_with_chunks(png, png_chunk(b"eXIf", exif_with_looping_ifd(2))),
        # C2PA's JUMBF boxes: in a JPEG's APP11 segments ("JP", instance, sequence) and a PNG's caBX chunk.
        "jpeg-jumbf-claims-8gb": jpeg_with_segments(
            jpeg, jpeg_segment(0xEB, b"JP\x00\x01\x00\x00\x00\x01" + jumbf_box(8 << 30))
        ),
        "png-jumbf-claims-8gb": png_with_chunks(png, png_chunk(b"caBX", jumbf_box(8 << 30))),
        "png-jumbf-claims-2^63": png_with_chunks(png, png_chunk(b"caBX", jumbf_box(2**63))),
    }
    try:
        from .provenance_helpers import make_certificate_chain, sign_c2pa

        chain = make_certificate_chain()
        signed = sign_c2pa(jpeg, "image/jpeg", chain)
        manifest_at = signed.index(b"\xff\xeb")
        manifest_end = manifest_at + 2 + struct.unpack(">H", signed[manifest_at + 2 : manifest_at + 4])[0]
        damaged = bytearray(signed)
        for position in range(manifest_at + 200, manifest_end - 8, 97):
            damaged[position] ^= 0x5A
        corpus["c2pa-manifest-bytes-mangled"] = bytes(damaged)
        corpus["c2pa-manifest-truncated"] = signed[: manifest_at + 300] + signed[manifest_end:]
        # A signing certificate followed by a root that did not issue it: the chain is broken.
        signer_pem = chain[0][: len(chain[0]) - len(chain[2])]
        other_root = make_certificate_chain()[2]
        broken = sign_c2pa(jpeg, "image/jpeg", (signer_pem + other_root, chain[1], chain[2]))
        corpus["c2pa-broken-signature-chain"] = broken
    except Exception as error:  # c2pa or cryptography missing, or c2pa refusing the broken chain
        print(f"C2PA files left out of the corpus: {type(error).__name__}: {error}")
    for name, data in corpus.items():  # real files, as a user would upload them
        (tmp_path / name).write_bytes(data)
    return corpus


def test_hostile_files_are_refused_or_answered_never_a_server_error(seed_checkpoint, tmp_path):
    corpus = hostile_corpus(tmp_path)
    good = jpeg_bytes(seed=2)
    with served_process(seed_checkpoint, *PROCESS_FLAGS) as (url, process):
        assert post_image(url, good).status_code == 200  # warm-up
        before_bytes = peak_rss_bytes(process.pid)
        answers = {}
        for name in corpus:
            data = (tmp_path / name).read_bytes()
            content_type = "image/png" if "png" in name else "image/jpeg"
            response = post_image(url, data, name, content_type)
            answers[name] = response.status_code
            assert process.poll() is None, f"{name} killed the server:\n{server_log(process)}"
            assert response.status_code in (200, 413, 415, 422), f"{name}: {response.text}"
            if response.status_code == 200:
                (record,) = response.json()["predictions"]
                assert record["error"] is not None or record["fake_score"] is not None, name
            else:
                assert response.json()["error"]["code"] in ("invalid_image", "too_many_pixels"), name
        # Several at once, as one request: each gets its own record.
        names = list(corpus)[:4]
        response = httpx.post(
            f"{url}/v1/predict",
            files=[("images", (name, corpus[name], "image/jpeg")) for name in names],
            timeout=REQUEST_TIMEOUT_S,
        )
        assert response.status_code == 200 and len(response.json()["predictions"]) == 4
        grown_bytes = peak_rss_bytes(process.pid) - before_bytes
        assert post_image(url, good).status_code == 200  # still serving
        log = server_log(process)
    print({name: status for name, status in answers.items()})
    print(f"peak RSS grew by {grown_bytes / 2**20:.0f} MiB over the corpus")
    # A 256 MB bomb inflated, or a claimed gigabytes allocated, would show here.
    assert grown_bytes < 256 * 2**20
    assert "Traceback" not in log, log


# --- restart -------------------------------------------------------------------------------------


def test_a_server_killed_under_load_comes_back_on_the_same_port_and_serves(seed_checkpoint):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    image = jpeg_bytes(seed=4)
    process = start_serve_process(seed_checkpoint, port, *PROCESS_FLAGS)
    answered: list[object] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                answered.append(post_image(url, image).status_code)
            except httpx.TransportError as error:  # the kill: cut off, never a wrong answer
                answered.append(type(error).__name__)

    try:
        wait_ready(url, process)
        with ThreadPoolExecutor(4) as pool:
            for _ in range(4):
                pool.submit(client)
            wait_for(lambda: answered.count(200) >= 8, "load on the first server", REQUEST_TIMEOUT_S)
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=SETTLE_TIMEOUT_S) == -signal.SIGKILL
            stop.set()
        assert not [status for status in answered if isinstance(status, int) and status >= 500]
    finally:
        stop.set()
        stop_process(process)

    again = start_serve_process(seed_checkpoint, port, *PROCESS_FLAGS)
    try:
        wait_ready(url, again)
        response = post_image(url, image)
        assert response.status_code == 200, response.text
        # Nothing was kept in memory across the kill, so nothing differs: the same record, and fresh counters.
        assert response.json()["predictions"][0]["error"] is None
        assert httpx.get(f"{url}/v1/stats", timeout=5).json()["images"] == 1
    finally:
        stop_process(again)


# --- soak ----------------------------------------------------------------------------------------


def load_soak_benchmark():
    path = Path(__file__).parents[1] / "benchmarks" / "serve_soak.py"
    spec = importlib.util.spec_from_file_location("serve_soak", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_soak_of_mixed_traffic_has_no_server_error_and_flat_memory(seed_checkpoint, tmp_path):
    soak = load_soak_benchmark()
    summary_path = tmp_path / "soak.json"
    argv = ["--model", str(seed_checkpoint), "--minutes", "0.5", "--warmup-seconds", "10"]
    argv += ["--clients", "3", "--json", str(summary_path)]
    code = soak.main(argv)
    import json

    summary = json.loads(summary_path.read_text())
    assert summary["server_errors"] == 0, summary
    assert summary["rss_growth_ratio"] <= 0.10, summary
    assert summary["requests"]["image"].get("200", 0) > 0 and summary["requests"]["bad"], summary
    assert summary["requests"]["slow"].get("200", 0) > 0, summary
    assert code == 0
