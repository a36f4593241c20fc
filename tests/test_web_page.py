"""The web page in a real headless Chromium (Debian's, driven by Playwright) against a real server."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx", reason="the dev extra is not installed: pip install -e '.[dev]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="the dev extra is not installed")

from deepfake_detector import Detector  # noqa: E402
from deepfake_detector.serving.app import build_app  # noqa: E402
from deepfake_detector.serving.config import ServeConfig  # noqa: E402

from .browser import chromium_page  # noqa: E402
from .media import picture_with_faces, write_video  # noqa: E402
from .serving_helpers import running_server  # noqa: E402


@pytest.fixture(scope="module")
def server(seed_checkpoint):
    detector = Detector.from_pretrained(seed_checkpoint, device="cpu")
    with running_server(build_app(detector, ServeConfig())) as url:
        yield url


@pytest.fixture
def page(tmp_path):
    with chromium_page(tmp_path / "profile", width=1100) as page:  # a fresh profile for every test
        yield page


@pytest.fixture
def face_picture(tmp_path) -> Path:
    image, _ = picture_with_faces(480, 320, [(150, 40, 220)], seed=4)
    path = tmp_path / "portrait.png"
    image.save(path)
    return path


def api_prediction(url: str, path: Path, *, faces: bool) -> dict:
    files = {"images": (path.name, path.read_bytes(), "image/png")}
    response = httpx.post(f"{url}/v1/predict", files=files, data={"faces": str(faces).lower()}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


def test_upload_shows_the_apis_verdict_score_faces_and_heatmap(server, page, face_picture, tmp_path):
    page.goto(server)
    sync_api.expect(page.locator("#model-line")).to_contain_text("weights", timeout=30_000)
    faces = page.locator("#find-faces")
    use_faces = faces.is_checked()
    page.set_input_files("#file-input", str(face_picture))
    page.wait_for_selector("#verdict[data-state=done]", timeout=60_000)

    expected = api_prediction(server, face_picture, faces=use_faces)
    verdict = page.locator("#verdict")
    assert verdict.get_attribute("data-verdict") == expected["verdict"]
    assert float(verdict.get_attribute("data-fake-score")) == pytest.approx(expected["fake_score"], abs=1e-9)
    assert verdict.inner_text() == expected["verdict"].upper()
    assert f"Fake score {expected['fake_score']:.3g}" in page.locator("#score-text").inner_text()
    bar = page.locator("#score-fill").evaluate("element => element.style.width")
    assert bar == f"{expected['fake_score'] * 100:.1f}%"
    if use_faces:  # one box drawn per face the API found
        assert page.locator("#faces .face").count() == len(expected["faces"]) >= 1
    domain = page.locator("#domain-text")  # one head: "model"; a face found is in the face domain
    assert domain.get_attribute("data-domain") == (expected["domain"] or "")
    assert domain.get_attribute("data-detector") == expected["detector"] == "model"

    heatmap = page.locator("#heatmap")
    sync_api.expect(heatmap).to_be_visible(timeout=60_000)
    natural = heatmap.evaluate("image => [image.naturalWidth, image.naturalHeight]")
    assert natural == list(Image.open(face_picture).size)

    screenshot = tmp_path / "page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert Image.open(screenshot).size[0] >= 1000


def test_the_domain_and_its_head_are_shown_beside_the_score(domain_checkpoint, varied_images, page):
    by_name = {path.name: path for path in varied_images}
    detector = Detector.from_pretrained(domain_checkpoint, device="cpu")
    hostile = '<img src=x onerror="window.__pwned=1">'
    with running_server(build_app(detector, ServeConfig())) as url:
        page.goto(url)
        sync_api.expect(page.locator("#model-line")).to_contain_text("weights", timeout=30_000)
        for name, shown in (("rgb.png", "general image (general-head)"), ("palette.png", "face (face-head)")):
            page.set_input_files("#file-input", str(by_name[name]))
            page.wait_for_selector("#verdict[data-state=done]", timeout=60_000)
            expected = api_prediction(url, by_name[name], faces=page.locator("#find-faces").is_checked())
            domain = page.locator("#domain-text")
            assert domain.get_attribute("data-domain") == expected["domain"]
            assert domain.get_attribute("data-detector") == expected["detector"]
            assert domain.inner_text() == f"Judged as: {shown}"
        # A domain the page has no words for is shown as the server named it, as text.
        page.route(
            "**/v1/predict",
            lambda route: route.fulfill(
                json={"predictions": [{**expected, "domain": hostile, "detector": f"{hostile}-head"}]}
            ),
        )
        page.set_input_files("#file-input", str(by_name["rgb.png"]))
        page.wait_for_selector("#verdict[data-state=done]", timeout=60_000)
        assert page.locator("#domain-text").inner_text() == f"Judged as: {hostile} ({hostile}-head)"
        assert page.locator("#domain-text img").count() == 0 and page.evaluate("window.__pwned") is None


def test_the_rule_shown_is_the_one_of_the_results_domain(
    calibrated_domain_checkpoint, varied_images, page, tmp_path
):
    # Faces fake at or above 0.1235, general images real below 0.3 and fake at or above 0.9543: the
    # page shows each image its own domain's rule, to 3 significant digits, and says whose it is.
    shown = {
        "face": "fake at or above 0.123, faces' threshold",
        "general": "real below 0.3, fake at or above 0.954, general images' threshold",
    }
    by_name = {path.name: path for path in varied_images}
    detector = Detector.from_pretrained(calibrated_domain_checkpoint, device="cpu")
    with running_server(build_app(detector, ServeConfig())) as url:
        rules = httpx.get(f"{url}/v1/model", timeout=30).json()["domain_thresholds"]
        assert rules["face"]["fake"] == 0.12345678901234  # full precision in the JSON
        page.goto(url)
        sync_api.expect(page.locator("#model-line")).to_contain_text("weights", timeout=30_000)
        seen = set()
        for name in ("rgb.png", "palette.png"):
            page.set_input_files("#file-input", str(by_name[name]))
            page.wait_for_selector("#verdict[data-state=done]", timeout=60_000)
            expected = api_prediction(url, by_name[name], faces=page.locator("#find-faces").is_checked())
            domain, rule = expected["domain"], rules[expected["domain"]]
            seen.add(domain)
            score_text = page.locator("#score-text")
            assert f"Fake score {expected['fake_score']:.3g} ({shown[domain]})" in score_text.inner_text()
            assert score_text.get_attribute("data-rule-domain") == domain
            left = page.locator("#threshold-fake").evaluate("marker => parseFloat(marker.style.left)")
            assert left == pytest.approx(rule["fake"] * 100, abs=1e-3)  # CSS keeps 6 digits
            assert page.locator("#threshold-real").is_hidden() == (rule["real"] == rule["fake"])
        assert seen == {"face", "general"}

        # A video's dashed line is the fake threshold of its clip's domain.
        pytest.importorskip("av", reason="the video extra is not installed")
        frames = [picture_with_faces(160, 120, [(30, 20, 80)], seed=index)[0] for index in range(4)]
        video = write_video(tmp_path / "clip.mp4", frames, fps=10)
        page.set_input_files("#file-input", str(video))
        page.wait_for_selector("#timeline:not([hidden])", timeout=60_000)
        faces = "true" if page.locator("#find-faces").is_checked() else "false"
        files = {"video": ("clip.mp4", video.read_bytes(), "video/mp4")}
        clip = httpx.post(f"{url}/v1/predict/video", files=files, data={"faces": faces}, timeout=120).json()
        fake = rules[clip["domain"]]["fake"]
        line = page.locator("#timeline-chart line.timeline-threshold")
        assert float(line.get_attribute("y1")) == pytest.approx(120 - fake * 120)
        dashed = {"face": "faces' fake threshold 0.123", "general": "general images' fake threshold 0.954"}
        assert f"dashed line: the {dashed[clip['domain']]}" in page.locator("#timeline-caption").inner_text()


def test_dropped_files_and_bad_files_get_clear_answers(server, page):
    page.goto(server)
    sync_api.expect(page.locator("#model-line")).to_contain_text("weights", timeout=30_000)

    def drop(name: str, data: bytes, mime: str) -> None:
        transfer = page.evaluate_handle(
            """([name, data, mime]) => {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], name, { type: mime }));
                return transfer;
            }""",
            [name, base64.b64encode(data).decode(), mime],
        )
        page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 90)).save(buffer, "JPEG")
    drop("dropped.jpg", buffer.getvalue(), "image/jpeg")
    page.wait_for_selector("#verdict[data-state=done]", timeout=60_000)
    assert page.locator("#verdict").get_attribute("data-verdict") in ("real", "uncertain", "fake")
    assert "dropped.jpg" in page.locator("#status").inner_text()
    # No face in it and no domain probe in the checkpoint: the page says the model can't tell domains.
    assert page.locator("#domain-text").get_attribute("data-domain") == ""
    assert "no domain (model); this model can't tell" in page.locator("#domain-text").inner_text()

    drop("broken.jpg", b"this is not an image", "image/jpeg")
    page.wait_for_selector("#verdict[data-state=error]", state="attached", timeout=60_000)
    assert page.locator("#answer").is_hidden()  # no verdict left over from the previous file
    assert "(invalid_image)" in page.locator("#error").inner_text()
    assert "broken.jpg" in page.locator("#error").inner_text()


def test_video_upload_draws_the_per_frame_timeline(server, page, tmp_path):
    pytest.importorskip("av", reason="the video extra is not installed")
    frames = [picture_with_faces(320, 240, [(40 + 6 * index, 20, 180)], seed=index)[0] for index in range(8)]
    video = write_video(tmp_path / "clip.mp4", frames, fps=10)
    page.goto(server)
    sync_api.expect(page.locator("#model-line")).to_contain_text("weights", timeout=30_000)
    page.set_input_files("#file-input", str(video))
    page.wait_for_selector("#verdict[data-state=done]", timeout=60_000)

    files = {"video": ("clip.mp4", video.read_bytes(), "video/mp4")}
    faces = "true" if page.locator("#find-faces").is_checked() else "false"
    response = httpx.post(f"{server}/v1/predict/video", files=files, data={"faces": faces}, timeout=120)
    expected = response.json()
    assert page.locator("#verdict").get_attribute("data-verdict") == expected["verdict"]
    assert float(page.locator("#verdict").get_attribute("data-fake-score")) == pytest.approx(
        expected["fake_score"]
    )
    points = page.locator("#timeline-chart polyline").get_attribute("points").split()
    assert len(points) == len(expected["frames"]) == 8
    assert page.locator("#timeline").is_visible()
    page.screenshot(path=str(tmp_path / "video.png"), full_page=True)


def test_provenance_evidence_is_shown_beside_the_score_as_text(server, page, tmp_path):
    from PIL import PngImagePlugin

    pytest.importorskip("c2pa")
    hostile = '<img src=x onerror="window.__pwned=1"> Steps: 20, Sampler: Euler a, CFG scale: 7'
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", hostile)
    path = tmp_path / "generated.png"
    Image.new("RGB", (80, 60), (90, 120, 200)).save(path, pnginfo=info)
    page.goto(server)
    sync_api.expect(page.locator("#model-line")).to_contain_text("weights", timeout=30_000)
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("#verdict[data-state=done]", timeout=60_000)

    expected = api_prediction(server, path, faces=page.locator("#find-faces").is_checked())
    panel = page.locator("#provenance")
    sync_api.expect(panel).to_be_visible()
    assert panel.get_attribute("data-ai-declared") == "true"
    assert panel.get_attribute("data-decided-by") == expected["decided_by"] == "model"
    items = page.locator("#provenance-evidence li")
    assert items.count() == len(expected["provenance"]["evidence"]) == 1
    assert "metadata · png_parameters: " in items.inner_text()
    assert hostile in items.inner_text()  # the markup shows as text
    assert page.locator("#provenance-evidence img").count() == 0
    assert page.evaluate("window.__pwned") is None
