"""The REST API, through a real HTTP client against a real uvicorn server on a loopback port."""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx", reason="the dev extra is not installed: pip install -e '.[dev]'")

from deepfake_detector import Detector  # noqa: E402
from deepfake_detector.cli.main import build_parser, main  # noqa: E402
from deepfake_detector.modeling.fingerprint import compute_weights_sha256  # noqa: E402
from deepfake_detector.results import Explanation, Prediction  # noqa: E402
from deepfake_detector.serving.app import build_app  # noqa: E402
from deepfake_detector.serving.config import API_KEY_ENV, ServeConfig  # noqa: E402
from deepfake_detector.serving.errors import ERROR_CODES  # noqa: E402

from .conftest import jpeg_bytes  # noqa: E402
from .doc_pages import code_blocks  # noqa: E402
from .media import picture_with_faces, write_video  # noqa: E402
from .serving_helpers import CountingDetector, running_server  # noqa: E402

API_KEY = "test-key-0123456789"
LIMITS = {"max_upload_bytes": 2_000_000, "max_pixels": 1_000_000, "max_images_per_request": 4}
VIDEO_LIMIT = {"max_video_seconds": 1.0}


@pytest.fixture(scope="module")
def detector(seed_checkpoint) -> Detector:
    return Detector.from_pretrained(seed_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def server(detector):
    with running_server(
        build_app(detector, ServeConfig(**LIMITS, **VIDEO_LIMIT, max_batch_wait_ms=5))
    ) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_server(detector):
    with running_server(build_app(detector, ServeConfig(**LIMITS, api_key=API_KEY))) as url:
        yield url


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def post_images(url: str, *files: tuple[str, bytes, str], **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", files=[("images", file) for file in files], timeout=60, **kwargs)


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code and ERROR_CODES[code][0] == status
    assert body["error"]["message"]
    return body["error"]


# --- endpoints -----------------------------------------------------------------------------------


def test_health_and_readiness(server):
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_model_describes_the_checkpoint_and_fingerprints_its_weights(
    server, seed_checkpoint, reversed_checkpoint
):
    from deepfake_detector import __version__

    info = httpx.get(f"{server}/v1/model").json()
    assert info["model"] == str(seed_checkpoint) and info["version"] == __version__
    assert info["id2label"] == {"0": "Realism", "1": "Deepfake"}
    assert info["roles"] == {"real": ["Realism"], "fake": ["Deepfake"]}
    assert info["thresholds"] == {"real": 0.5, "fake": 0.5}
    assert info["limits"]["max_images_per_request"] == 4 and "api_key" not in info["limits"]
    # The hash belongs to the weights, not to the Python object: a fresh load gives the same one,
    # another checkpoint a different one.
    fresh = Detector.from_pretrained(seed_checkpoint, device="cpu")
    assert info["weights_sha256"] == compute_weights_sha256(fresh.model)
    other = Detector.from_pretrained(reversed_checkpoint, device="cpu")
    assert compute_weights_sha256(other.model) != info["weights_sha256"]


def test_predict_gives_the_librarys_records_for_each_upload(server, detector, varied_images):
    by_name = {path.name: path for path in varied_images}
    names = [
        "small.jpg",
        "vga.jpg",
        "progressive.jpg",
        "rgba.png",
        "palette.png",
        "exif-6.jpg",
        "animated.gif",
    ]
    paths = [by_name[name] for name in [*names, "scan.tiff"]]  # all within this server's 1 MP
    records = []
    for start in range(0, len(paths), 4):
        chunk = paths[start : start + 4]
        response = post_images(
            server, *[(path.name, path.read_bytes(), "application/octet-stream") for path in chunk]
        )
        assert response.status_code == 200, response.text
        records += response.json()["predictions"]
    expected = detector.predict(paths, batch_size=4)
    assert [record["source"] for record in records] == [path.name for path in paths]
    for record, prediction in zip(records, expected, strict=True):
        assert set(record) == {*Prediction.field_names(), "provenance", "error_code"}
        library = prediction.to_dict()
        same = (
            "label",
            "verdict",
            "model",
            "revision",
            "error",
            "decided_by",
            "domain",
            "detector",
            "threshold",
            "uncertain_from",
            "threshold_from",
            "provenance",
        )
        assert {key: record[key] for key in same} == {key: library[key] for key in same}
        assert record["fake_score"] == pytest.approx(library["fake_score"], abs=1e-6)
        assert record["error_code"] is None


def test_one_bad_image_among_several_gets_its_own_error_record(server, detector):
    good = jpeg_bytes(seed=3)
    response = post_images(server, ("good.jpg", good, "image/jpeg"), ("bad.jpg", b"not a jpeg", "image/jpeg"))
    assert response.status_code == 200
    first, second = response.json()["predictions"]
    assert first["verdict"] == detector.predict(good).verdict and first["error"] is None
    assert second["fake_score"] is None and second["error_code"] == "invalid_image"
    assert "bad.jpg" in second["error"]


def test_explain_answers_a_png_overlay_or_the_explanation_record(server, detector):
    image = jpeg_bytes(height=48, width=80, seed=5)
    expected = detector.predict(image)
    response = httpx.post(
        f"{server}/v1/explain", files={"image": ("face.jpg", image, "image/jpeg")}, timeout=60
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (80, 48)
    assert response.headers["x-verdict"] == expected.verdict
    assert float(response.headers["x-fake-score"]) == pytest.approx(expected.fake_score, abs=1e-6)

    response = httpx.post(
        f"{server}/v1/explain",
        params={"format": "json"},
        data={"method": "gradcam"},
        files={"image": ("face.jpg", image, "image/jpeg")},
        timeout=60,
    )
    assert response.status_code == 200
    body = response.json()
    record = body["explanation"]
    assert set(record) == set(Explanation("x", "rollout", *[None] * 5, "m").to_dict())
    assert (
        record["method"] == "gradcam" and record["image_size"] == [80, 48] and record["source"] == "face.jpg"
    )
    assert record["fake_score"] == pytest.approx(expected.fake_score, abs=1e-6)
    import base64

    assert Image.open(io.BytesIO(base64.b64decode(body["overlay_png_base64"]))).size == (80, 48)


def test_explain_without_heatmaps_is_a_clear_501(detector):
    with running_server(build_app(CountingDetector(detector))) as url:
        response = httpx.post(f"{url}/v1/explain", files={"image": ("a.jpg", jpeg_bytes(), "image/jpeg")})
    assert "no heatmaps" in assert_error(response, 501, "explain_unavailable")["message"]


def test_explain_on_a_convolutional_checkpoint_uses_gradcam_by_default(tmp_path):
    from .conftest import SEED_LABELS, build_tiny_resnet

    resnet = Detector.from_pretrained(build_tiny_resnet(tmp_path / "resnet", SEED_LABELS), device="cpu")
    data = jpeg_bytes(height=48, width=80, seed=5)
    image = ("photo.jpg", data, "image/jpeg")
    with running_server(build_app(resnet)) as url:
        png = httpx.post(f"{url}/v1/explain", files={"image": image}, timeout=60)
        answer = httpx.post(
            f"{url}/v1/explain", params={"format": "json"}, files={"image": image}, timeout=60
        )
        rollout = httpx.post(
            f"{url}/v1/explain", data={"method": "rollout"}, files={"image": image}, timeout=60
        )
    assert png.status_code == 200 and png.headers["content-type"] == "image/png", png.text
    assert Image.open(io.BytesIO(png.content)).size == (80, 48)
    assert answer.status_code == 200, answer.text
    record = answer.json()["explanation"]
    assert record["method"] == "gradcam" and record["image_size"] == [80, 48]  # "auto", resolved
    assert record["fake_score"] == pytest.approx(resnet.predict(data).fake_score, abs=1e-6)
    message = assert_error(rollout, 501, "explain_unavailable")["message"]
    assert "rollout needs attention" in message and "'gradcam'" in message


def test_predict_with_faces_gives_the_librarys_face_records(server, detector, tmp_path):
    pytest.importorskip("dlib", reason="the faces extra is not installed")
    picture, _ = picture_with_faces(320, 240, [(40, 20, 180)])
    picture.save(tmp_path / "face.jpg", quality=95)  # a JPEG: face mode must decode it at full size
    data = (tmp_path / "face.jpg").read_bytes()
    response = post_images(server, ("face.jpg", data, "image/jpeg"), data={"faces": "true"})
    assert response.status_code == 200, response.text
    (record,) = response.json()["predictions"]
    expected = detector.predict(data, faces=True).to_dict()
    assert record["no_face"] is False and len(record["faces"]) == len(expected["faces"]) >= 1
    for face, library in zip(record["faces"], expected["faces"], strict=True):
        assert face["box"] == library["box"] and face["verdict"] == library["verdict"]
        assert face["domain"] == library["domain"]
        assert face["fake_score"] == pytest.approx(library["fake_score"], abs=1e-6)


def test_explain_with_faces_maps_each_face_crop_and_draws_its_box(server, detector):
    pytest.importorskip("dlib", reason="the faces extra is not installed")
    import base64

    import numpy as np

    picture, _ = picture_with_faces(320, 240, [(40, 20, 180)])
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    response = httpx.post(
        f"{server}/v1/explain",
        params={"format": "json"},
        data={"faces": "true"},
        files={"image": ("face.png", buffer.getvalue(), "image/png")},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    record = response.json()["explanation"]
    expected = detector.explain(picture, faces=True)
    assert record["no_face"] is False
    assert [face["crop_box"] for face in record["faces"]] == [list(face.crop_box) for face in expected.faces]
    assert record["fake_score"] == pytest.approx(expected.fake_score, abs=1e-6)
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(response.json()["overlay_png_base64"]))))
    left, top, right, _ = record["faces"][0]["crop_box"]
    assert tuple(overlay[top, (left + right) // 2]) == (255, 255, 255)  # the crop's box is drawn

    response = httpx.post(
        f"{server}/v1/explain",
        params={"format": "json"},
        data={"faces": "true"},
        files={"image": ("noise.jpg", jpeg_bytes(48, 80, seed=5), "image/jpeg")},
        timeout=60,
    )
    assert response.status_code == 200 and response.json()["explanation"]["no_face"] is True


def test_a_checkpoint_trained_on_faces_is_served_in_face_mode_by_default(tmp_path):
    pytest.importorskip("dlib", reason="the faces extra is not installed")
    from .conftest import SEED_LABELS, build_tiny_vit

    folder = build_tiny_vit(tmp_path / "face-model", SEED_LABELS)
    config = json.loads((folder / "config.json").read_text())
    config["deepfake_detector"] = {"faces": {"detector": "dlib-hog", "margin_ratio": 1.3}}
    (folder / "config.json").write_text(json.dumps(config))
    buffer = io.BytesIO()
    picture_with_faces(320, 240, [(40, 20, 180)])[0].save(buffer, "PNG")
    image = ("face.png", buffer.getvalue(), "image/png")
    with running_server(build_app(Detector.from_pretrained(folder, device="cpu"))) as url:
        (default,) = post_images(url, image).json()["predictions"]
        (whole,) = post_images(url, image, data={"faces": "false"}).json()["predictions"]
        explained = httpx.post(
            f"{url}/v1/explain", params={"format": "json"}, files={"image": image}, timeout=60
        )
        model = httpx.get(f"{url}/v1/model").json()
    assert len(default["faces"]) == 1 and "faces" not in whole
    assert len(explained.json()["explanation"]["faces"]) == 1
    assert model["faces"] == {"detector": "dlib-hog", "margin_ratio": 1.3}


@pytest.fixture(scope="module")
def face_video(tmp_path_factory) -> Path:
    pytest.importorskip("av", reason="the video extra is not installed")
    frames = [picture_with_faces(320, 240, [(30 + 4 * index, 20, 180)], seed=index)[0] for index in range(8)]
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=10)  # 0.8 s


def test_video_is_scored_into_a_timeline_like_the_library(server, detector, face_video):
    from deepfake_detector.video.decode import FrameSampling

    pytest.importorskip("dlib", reason="the faces extra is not installed")
    response = httpx.post(
        f"{server}/v1/predict/video",
        files={"video": ("clip.mp4", face_video.read_bytes(), "video/mp4")},
        data={"num_frames": "4", "faces": "true"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    record = response.json()
    expected = detector.predict_video(face_video, faces=True, sampling=FrameSampling(num_frames=4)).to_dict()
    assert record["source"] == "clip.mp4" and record["kind"] == "video" and record["num_frames"] == 4
    assert [frame["timestamp_s"] for frame in record["frames"]] == [
        frame["timestamp_s"] for frame in expected["frames"]
    ]
    assert record["verdict"] == expected["verdict"]
    assert record["fake_score"] == pytest.approx(expected["fake_score"], abs=1e-6)
    assert set(record) == set(expected)


def test_every_answer_carries_the_domain_and_the_head_that_scored_it(
    domain_checkpoint, varied_images, face_video
):
    from deepfake_detector.video.decode import FrameSampling

    detector = Detector.from_pretrained(domain_checkpoint, device="cpu")
    by_name = {path.name: path for path in varied_images}
    paths = [by_name[name] for name in ("rgb.png", "palette.png", "grey.png", "la.png")]
    expected = detector.predict(paths)
    sampling = FrameSampling(num_frames=4)
    clip = detector.predict_video(face_video, faces=False, sampling=sampling)
    uploads = [(path.name, path.read_bytes(), "image/png") for path in paths]
    with running_server(build_app(detector, ServeConfig(max_batch_wait_ms=5))) as url:
        records = post_images(url, *uploads).json()["predictions"]
        explained = httpx.post(
            f"{url}/v1/explain", params={"format": "json"}, files={"image": uploads[1]}, timeout=60
        )
        overlay = httpx.post(f"{url}/v1/explain", files={"image": uploads[1]}, timeout=60)
        video = httpx.post(
            f"{url}/v1/predict/video",
            files={"video": ("clip.mp4", face_video.read_bytes(), "video/mp4")},
            data={"num_frames": "4", "faces": "false"},
            timeout=120,
        ).json()
    assert {prediction.domain for prediction in expected} == {"face", "general"}  # both heads answer
    for record, prediction in zip(records, expected, strict=True):
        assert (record["domain"], record["detector"]) == (prediction.domain, prediction.detector)
        assert record["detector"] == f"{record['domain']}-head"
    assert explained.json()["explanation"]["domain"] == expected[1].domain
    assert overlay.headers["x-domain"] == expected[1].domain
    assert (video["domain"], video["detector"]) == (clip.domain, clip.detector) and clip.domain
    assert [frame["domain"] for frame in video["frames"]] == [frame.domain for frame in clip.frames]


def test_video_limits_and_bad_videos(server, tmp_path):
    pytest.importorskip("av", reason="the video extra is not installed")
    long_video = write_video(
        tmp_path / "long.mp4", [Image.new("RGB", (64, 48), (9 * i, 80, 120)) for i in range(20)]
    )

    def post_video(name: str, data: bytes, content_type: str) -> httpx.Response:
        return httpx.post(
            f"{server}/v1/predict/video", files={"video": (name, data, content_type)}, timeout=60
        )

    # 20 frames at 10 fps last 2 s; this server takes up to 1 s.
    error = assert_error(post_video("long.mp4", long_video.read_bytes(), "video/mp4"), 422, "video_too_long")
    assert "long.mp4" in error["message"] and "max_video_seconds" in error["message"]
    error = assert_error(post_video("broken.mp4", b"\x00" * 500, "video/mp4"), 422, "invalid_video")
    assert "broken.mp4" in error["message"] and "deepfake-detector-upload" not in error["message"]
    error = assert_error(post_video("a.jpg", jpeg_bytes(), "image/jpeg"), 415, "unsupported_media_type")
    assert "/v1/predict" in error["message"]


def test_unknown_paths_and_methods_answer_json_errors(server):
    assert_error(httpx.get(f"{server}/v2/predict"), 404, "not_found")
    response = httpx.get(f"{server}/v1/predict")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


def test_the_page_and_its_assets_are_served_with_a_strict_policy(server):
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and "deepfake-detector" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "style.css"):
        assert httpx.get(f"{server}/static/{asset}").status_code == 200


def test_openapi_documents_every_route_its_upload_and_its_errors(server):
    spec = httpx.get(f"{server}/openapi.json").json()
    operations = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert operations == {
        ("POST", "/v1/predict"),
        ("POST", "/v1/predict/video"),
        ("POST", "/v1/explain"),
        ("GET", "/v1/model"),
        ("GET", "/v1/stats"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
    }
    predict = spec["paths"]["/v1/predict"]["post"]
    body_ref = predict["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    images = spec["components"]["schemas"][body_ref]["properties"]["images"]
    assert images["type"] == "array" and images["maxItems"] == 4
    assert {"200", "413", "415", "422", "503", "504"} <= set(predict["responses"])
    assert predict["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )
    schemas = spec["components"]["schemas"]
    for name in ("PredictionRecord", "VideoPredictionRecord"):
        assert {"domain", "detector"} <= set(schemas[name]["properties"]), name
    for name in ("FaceRecord", "FrameRecord", "ExplanationRecord"):
        assert "domain" in schemas[name]["properties"], name
    explain_200 = spec["paths"]["/v1/explain"]["post"]["responses"]["200"]["content"]
    assert {"image/png", "application/json"} <= set(explain_200)
    assert "securitySchemes" not in spec.get("components", {})  # this server has no key


def test_readme_serving_commands_run(server, face_video, tmp_path):
    pytest.importorskip("dlib", reason="the faces extra is not installed")
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    block = code_blocks("docs/serving.md", "# Serving: REST API and web page", "console")[0]
    serve_line, *curl_lines = [line for line in block.splitlines() if line.strip()]
    # Running `serve` would block; its flags must parse as written.
    args = build_parser().parse_args(shlex.split(serve_line)[1:])
    assert (args.command, args.host, args.port) == ("serve", "127.0.0.1", 8000)

    (tmp_path / "photo.jpg").write_bytes(jpeg_bytes(120, 160, seed=5))
    picture_with_faces(320, 240, [(40, 20, 180)])[0].save(tmp_path / "group.jpg")
    shutil.copy(face_video, tmp_path / "clip.mp4")
    assert len(curl_lines) >= 5
    for line in curl_lines:
        argv = [*shlex.split(line.replace("http://127.0.0.1:8000", server)), "--fail-with-body", "--silent"]
        result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{line}\n{result.stdout}{result.stderr}"
        if "-o" not in argv:  # a JSON answer, and --fail-with-body already refused error statuses
            assert isinstance(json.loads(result.stdout), dict)
    assert Image.open(tmp_path / "photo.heatmap.png").size == (160, 120)


# --- limits --------------------------------------------------------------------------------------


def test_oversized_upload_is_refused_whether_declared_or_streamed(server):
    big = b"\xff" * (LIMITS["max_upload_bytes"] + 1)
    assert_error(post_images(server, ("big.jpg", big, "image/jpeg")), 413, "payload_too_large")

    # Chunked, with no Content-Length: cut off while it is read.
    boundary = "limit-test-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="big.jpg"\r\n'
    head += "Content-Type: image/jpeg\r\n\r\n"

    def body():
        yield head.encode()
        for _ in range(40):
            yield b"\xff" * 64_000
        yield f"\r\n--{boundary}--\r\n".encode()

    response = httpx.post(
        f"{server}/v1/predict",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=60,
    )
    assert "max_upload_bytes" in assert_error(response, 413, "payload_too_large")["message"]


def test_image_with_too_many_pixels_is_refused_before_decoding(server):
    error = assert_error(
        post_images(server, ("wide.png", png_bytes(1001, 1000), "image/png")), 422, "too_many_pixels"
    )
    assert "1,001,000" in error["message"] and "1,000,000" in error["message"]
    ok = post_images(server, ("ok.png", png_bytes(1000, 1000), "image/png"))
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "data",
    [b"", b"plain text, not an image", jpeg_bytes()[:300], b"\x89PNG\r\n\x1a\n" + b"\x00" * 50],
    ids=["empty", "text", "truncated-jpeg", "broken-png"],
)
def test_corrupt_file_is_a_422_naming_the_file(server, data):
    error = assert_error(post_images(server, ("upload.jpg", data, "image/jpeg")), 422, "invalid_image")
    assert "upload.jpg" in error["message"]


def test_wrong_content_types_are_refused(server):
    response = httpx.post(f"{server}/v1/predict", json={"images": ["https://example.com/a.jpg"]})
    assert "multipart/form-data" in assert_error(response, 415, "unsupported_media_type")["message"]
    response = post_images(server, ("notes.txt", b"hello", "text/plain"))
    assert "notes.txt" in assert_error(response, 415, "unsupported_media_type")["message"]
    response = post_images(server, ("clip.mp4", b"\x00" * 32, "video/mp4"))
    assert "/v1/predict/video" in assert_error(response, 415, "unsupported_media_type")["message"]


def test_too_many_or_no_images(server):
    files = [(f"{index}.jpg", jpeg_bytes(seed=index), "image/jpeg") for index in range(5)]
    assert "limit is 4" in assert_error(post_images(server, *files), 422, "too_many_images")["message"]
    response = httpx.post(f"{server}/v1/predict", files={"other": ("a.jpg", jpeg_bytes(), "image/jpeg")})
    assert "images" in assert_error(response, 422, "invalid_request")["message"]


def test_names_in_a_request_are_never_opened_or_fetched(server, varied_images):
    # A real image's path as the file name, with bytes that are not an image: the bytes decide.
    response = post_images(server, (str(varied_images[0]), b"junk", "image/jpeg"))
    assert_error(response, 422, "invalid_image")
    # A path or URL as a form value instead of a file is not an upload at all.
    for value in (str(varied_images[0]), "http://127.0.0.1:9/a.jpg"):
        response = httpx.post(
            f"{server}/v1/predict", data={"images": value}, files={"x": ("x", b"", "text/plain")}
        )
        assert_error(response, 422, "invalid_request")


def test_api_key_is_required_on_v1_routes_only(keyed_server):
    upload = [("images", ("a.jpg", jpeg_bytes(), "image/jpeg"))]
    assert_error(httpx.post(f"{keyed_server}/v1/predict", files=upload), 401, "missing_api_key")
    response = httpx.post(f"{keyed_server}/v1/predict", files=upload, headers={"X-API-Key": API_KEY + "x"})
    assert_error(response, 401, "invalid_api_key")
    assert_error(httpx.get(f"{keyed_server}/v1/model"), 401, "missing_api_key")
    assert (
        httpx.post(f"{keyed_server}/v1/predict", files=upload, headers={"X-API-Key": API_KEY}).status_code
        == 200
    )
    assert httpx.get(f"{keyed_server}/v1/model", headers={"X-API-Key": API_KEY}).status_code == 200
    assert httpx.get(f"{keyed_server}/healthz").status_code == 200
    spec = httpx.get(f"{keyed_server}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }


def test_full_queue_answers_503_with_retry_after_and_health_stays_responsive(detector):
    gate = threading.Event()
    slow = CountingDetector(detector, gate=gate)
    config = ServeConfig(queue_size=1, retry_after_s=7, max_batch_wait_ms=0)
    with running_server(build_app(slow, config)) as url, ThreadPoolExecutor(1) as pool:
        first = pool.submit(post_images, url, ("a.jpg", jpeg_bytes(), "image/jpeg"))
        assert slow.entered.wait(timeout=30)  # the model is now busy with the first request
        try:
            response = post_images(url, ("b.jpg", jpeg_bytes(), "image/jpeg"))
            assert_error(response, 503, "queue_full")
            assert response.headers["retry-after"] == "7"
            # The model thread is blocked; the event loop is not.
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            assert httpx.get(f"{url}/v1/stats", timeout=5).json()["rejected_queue_full"] == 1
        finally:
            gate.set()
        assert first.result(timeout=30).status_code == 200


def test_a_request_past_its_deadline_answers_504(detector):
    gate = threading.Event()
    slow = CountingDetector(detector, gate=gate)
    with running_server(build_app(slow, ServeConfig(request_timeout_s=0.5))) as url:
        try:
            response = post_images(url, ("a.jpg", jpeg_bytes(), "image/jpeg"))
        finally:
            gate.set()
        assert "request_timeout_s" in assert_error(response, 504, "timeout")["message"]
        assert httpx.get(f"{url}/v1/stats").json()["timeouts"] == 1


def test_concurrent_requests_are_scored_in_bounded_batches(detector):
    counting = CountingDetector(detector)
    config = ServeConfig(max_batch_size=4, max_batch_wait_ms=300)
    images = [jpeg_bytes(seed=seed) for seed in range(10)]
    with running_server(build_app(counting, config)) as url:
        with ThreadPoolExecutor(len(images)) as pool:
            responses = list(
                pool.map(
                    lambda pair: post_images(url, (f"{pair[0]}.jpg", pair[1], "image/jpeg")),
                    enumerate(images),
                )
            )
        stats = httpx.get(f"{url}/v1/stats").json()
    assert all(response.status_code == 200 for response in responses)
    # Batching is visible twice: in the model calls the detector saw, and in the server's histogram.
    assert sum(counting.call_sizes) == 10 and len(counting.call_sizes) < 10
    assert max(counting.call_sizes) > 1 and max(counting.call_sizes) <= 4
    assert stats["images"] == 10 and stats["batches"] == len(counting.call_sizes)
    assert stats["batch_size_histogram"] == {
        str(size): counting.call_sizes.count(size) for size in sorted(set(counting.call_sizes))
    }
    # Each request got its own image's answer back, not a neighbour's from the same batch.
    for image, response in zip(images, responses, strict=True):
        assert response.json()["predictions"][0]["fake_score"] == pytest.approx(
            detector.predict(image).fake_score, abs=1e-6
        )


# --- the schema, fuzzed --------------------------------------------------------------------------


def test_schemathesis_finds_no_server_error_and_no_schema_violation(keyed_server):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{keyed_server}/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=checks, timeout=60)

        fuzz()


# --- the command ---------------------------------------------------------------------------------


def test_serve_refuses_bad_limits_before_loading_a_model(capsys):
    assert main(["serve", "--model", "does-not-matter", "--queue-size", "0"]) == 2
    assert "queue_size must be at least 1" in capsys.readouterr().err


def test_serve_command_builds_the_app_from_its_flags_and_the_environment(
    seed_checkpoint, detector, monkeypatch
):
    import uvicorn

    served = {}

    def serve_for_a_moment(app, *, host, port, log_level):
        # Instead of blocking forever on the port: serve on a free port and make real requests.
        served.update(host=host, port=port, log_level=log_level)
        with running_server(app) as url:
            image = jpeg_bytes(seed=11)
            served["without_key"] = post_images(url, ("a.jpg", image, "image/jpeg"))
            served["with_key"] = post_images(
                url, ("a.jpg", image, "image/jpeg"), headers={"X-API-Key": API_KEY}
            )
            served["model"] = httpx.get(f"{url}/v1/model", headers={"X-API-Key": API_KEY}).json()
            served["expected"] = detector.predict(image).fake_score

    monkeypatch.setattr(uvicorn, "run", serve_for_a_moment)
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    argv = ["serve", "--model", str(seed_checkpoint), "--device", "cpu", "--port", "8123"]
    argv += ["--max-images-per-request", "3", "--max-batch-wait-ms", "2.5", "--log-level", "warning"]
    assert main(argv) == 0
    assert (served["host"], served["port"], served["log_level"]) == ("127.0.0.1", 8123, "warning")
    assert_error(served["without_key"], 401, "missing_api_key")
    assert served["with_key"].json()["predictions"][0]["fake_score"] == pytest.approx(
        served["expected"], abs=1e-6
    )
    assert served["model"]["limits"]["max_images_per_request"] == 3
    assert served["model"]["limits"]["max_batch_wait_ms"] == 2.5


def test_serve_module_imports_no_web_framework_until_run():
    code = "import sys, deepfake_detector.cli.main; print('fastapi' in sys.modules, 'uvicorn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False"
