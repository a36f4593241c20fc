"""The provenance stage on real artefacts: C2PA manifests signed here with c2pa-python, generator
metadata written with Pillow, and the Stable Diffusion watermark embedded with invisible-watermark."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from deepfake_detector import Detector
from deepfake_detector.cli.main import main
from deepfake_detector.provenance import ProvenanceOptions
from deepfake_detector.provenance.watermark import (
    STABLE_DIFFUSION_PAYLOADS,
    compute_haar_approximation,
    find_watermark,
    read_block_bits,
    vote_bits,
)
from tests.conftest import _texture
from tests.provenance_helpers import (
    change_jpeg_pixels,
    make_certificate_chain,
    sd_watermark,
    sign_c2pa,
)

pytest.importorskip("c2pa")
SDXL = STABLE_DIFFUSION_PAYLOADS[2]
A1111_PARAMETERS = (
    "portrait photo of a woman, natural light\nNegative prompt: blurry\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x512, Model: sd_xl_base_1.0"
)


@pytest.fixture(scope="module")
def chain():
    return make_certificate_chain()


@pytest.fixture(scope="module")
def detector(seed_checkpoint):
    return Detector.from_pretrained(seed_checkpoint, precision="fp32", workers=0)


@pytest.fixture(scope="module")
def plain_detector(seed_checkpoint):
    return Detector.from_pretrained(seed_checkpoint, precision="fp32", workers=0, provenance=False)


def _jpeg(seed: int = 0, size: int = 96, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_texture(size, size, seed)).save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def _png(image: Image.Image, **text: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_signed_ai_declaration_decides_the_verdict(tmp_path, chain, detector, plain_detector):
    path = _write(tmp_path, "generated.jpg", sign_c2pa(_jpeg(), "image/jpeg", chain))
    result = detector.predict(path)
    assert result.provenance.ai_declared is True
    assert result.provenance.c2pa.state == "valid"  # intact, but the test root is in no trust list
    assert result.provenance.c2pa.digital_source_type == "trainedAlgorithmicMedia"
    assert "signingCredential.untrusted" in result.provenance.c2pa.problems
    assert (result.verdict, result.decided_by) == ("fake", "provenance")
    assert [finding.name for finding in result.provenance.decisive] == ["c2pa_ai_generated"]
    # The model's own score is reported unchanged.
    assert result.fake_score == pytest.approx(plain_detector.predict(path).fake_score, abs=1e-9)
    row = result.to_dict()
    assert row["provenance"]["c2pa"]["claim_generator"] == "test-image-generator 1.0"
    assert row["provenance"]["evidence"][0]["name"] == "c2pa_ai_generated"


def test_a_trust_list_makes_the_signer_trusted(tmp_path, chain, seed_checkpoint):
    path = _write(tmp_path, "generated.jpg", sign_c2pa(_jpeg(), "image/jpeg", chain))
    anchors = _write(tmp_path, "anchors.pem", chain[2])
    detector = Detector.from_pretrained(seed_checkpoint, workers=0, c2pa_trust_anchors=anchors)
    result = detector.predict(path)
    assert result.provenance.c2pa.state == "trusted"
    assert result.provenance.c2pa.problems == ()
    assert result.decided_by == "provenance"


def test_pixels_changed_after_signing_are_invalid_and_decide_nothing(
    tmp_path, chain, detector, plain_detector
):
    signed = sign_c2pa(_jpeg(), "image/jpeg", chain)
    path = _write(tmp_path, "edited.jpg", change_jpeg_pixels(signed))
    result = detector.predict(path)
    summary = result.provenance.c2pa
    assert summary.state == "invalid"
    assert "assertion.dataHash.mismatch" in summary.problems
    assert result.provenance.ai_declared is False
    assert [finding.name for finding in result.provenance.evidence] == ["c2pa_invalid"]
    assert result.decided_by == "model"
    assert result.verdict == plain_detector.predict(path).verdict


def test_a_manifest_without_an_ai_declaration_is_evidence_only(tmp_path, chain, detector):
    captured = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
    path = _write(tmp_path, "camera.jpg", sign_c2pa(_jpeg(), "image/jpeg", chain, source_type=captured))
    result = detector.predict(path)
    assert result.provenance.ai_declared is False
    assert result.provenance.c2pa.digital_source_type == "digitalCapture"
    assert result.decided_by == "model"


def test_png_generation_parameters_are_quoted_but_never_decide(tmp_path, detector, plain_detector):
    path = _write(
        tmp_path, "a1111.png", _png(Image.fromarray(_texture(80, 80, 3)), parameters=A1111_PARAMETERS)
    )
    result = detector.predict(path)
    (finding,) = result.provenance.evidence
    assert (finding.check, finding.name) == ("metadata", "png_parameters")
    assert "Steps: 20, Sampler: Euler a" in finding.detail
    assert result.provenance.ai_declared is True
    assert result.decided_by == "model"
    assert result.verdict == plain_detector.predict(path).verdict


def test_comfyui_chunks_are_found(tmp_path, detector):
    graph = json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20}}})
    path = _write(
        tmp_path, "comfy.png", _png(Image.fromarray(_texture(80, 80, 4)), prompt=graph, workflow="{}")
    )
    names = [finding.name for finding in detector.predict(path).provenance.evidence]
    assert names == ["png_prompt", "png_workflow"]


def test_exif_naming_a_generator_is_found(tmp_path, detector):
    exif = Image.Exif()
    exif[0x0131] = "Adobe Firefly Image 3"
    path = _write(tmp_path, "firefly.jpg", _jpeg(exif=exif.tobytes()))
    (finding,) = detector.predict(path).provenance.evidence
    assert (finding.name, finding.detail) == ("exif_software", "Adobe Firefly Image 3")


def test_a1111_jpeg_user_comment_is_found(tmp_path, detector):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + A1111_PARAMETERS.encode("utf-16-be")
    path = _write(tmp_path, "a1111.jpg", _jpeg(exif=exif.tobytes()))
    (finding,) = detector.predict(path).provenance.evidence
    assert finding.name == "exif_user_comment"
    assert "CFG scale: 7" in finding.detail


def test_xmp_digital_source_type_is_found(tmp_path, detector):
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"/>'
        "</rdf:RDF></x:xmpmeta>"
    )
    path = _write(tmp_path, "xmp.jpg", _jpeg(xmp=xmp.encode()))
    result = detector.predict(path)
    (finding,) = result.provenance.evidence
    assert finding.name == "xmp_digital_source_type"
    assert finding.detail.endswith("trainedAlgorithmicMedia")
    assert (result.provenance.ai_declared, result.decided_by) == (True, "model")


def test_a_plain_camera_style_file_has_no_finding(tmp_path, detector):
    exif = Image.Exif()
    exif[0x0131] = "Adobe Photoshop 25.0"  # an editor, not a generator
    result = detector.predict(_write(tmp_path, "photo.jpg", _jpeg(exif=exif.tobytes())))
    assert result.provenance.evidence == ()
    assert result.provenance.ai_declared is None
    assert result.provenance.checks == ("c2pa", "metadata")  # a JPEG: no watermark left to read
    assert result.decided_by == "model"


@pytest.mark.parametrize("payload", STABLE_DIFFUSION_PAYLOADS, ids=lambda payload: payload.name)
def test_the_decoder_votes_exactly_as_the_library(payload):
    from imwatermark import WatermarkDecoder

    photo = _texture(320, 384, 7)
    # Smooth and flat pictures put many coefficients exactly on a quantisation boundary, where only
    # floating-point rounding decides the bit.
    smooth = np.asarray(Image.fromarray(_texture(42, 50, 8)).resize((386, 322), Image.BICUBIC))
    flat = np.full((260, 300, 3), (118, 40, 201), dtype=np.uint8)
    for rgb in (np.asarray(sd_watermark(photo, payload.bits)), photo, smooth, flat):
        for embedded_as, given in (("bgr", rgb[:, :, ::-1]), ("rgb", rgb)):
            decoder = WatermarkDecoder("bits", len(payload.bits))
            expected = np.array(decoder.decode(np.ascontiguousarray(given), "dwtDct"), dtype=bool)
            assert np.array_equal(vote_bits(read_block_bits(rgb, embedded_as), len(payload.bits)), expected)


def test_the_haar_band_is_pywavelets_bit_for_bit():
    import pywt

    channel = np.random.default_rng(0).integers(0, 256, size=(130, 98), dtype=np.uint8)
    assert np.array_equal(compute_haar_approximation(channel), pywt.dwt2(channel, "haar")[0])


def test_an_sd_watermark_decides_and_a_jpeg_copy_loses_it(tmp_path, detector):
    marked = sd_watermark(_texture(512, 512, 0), SDXL.bits)
    buffer = io.BytesIO()
    marked.save(buffer, "PNG")
    result = detector.predict(_write(tmp_path, "sdxl.png", buffer.getvalue()))
    (finding,) = result.provenance.evidence
    assert (finding.name, result.verdict, result.decided_by) == ("sd_watermark", "fake", "provenance")
    assert finding.detail.startswith("SDXL: ")
    # docs/provenance.md: JPEG re-encoding erases the mark (6 of 636 copies kept it at quality 95, 1 at
    # 90, none below), so JPEG files are not read for it; this one lost it too.
    buffer = io.BytesIO()
    marked.save(buffer, "JPEG", quality=95)
    copy = detector.predict(_write(tmp_path, "sdxl.jpg", buffer.getvalue()))
    assert (copy.provenance.evidence, copy.provenance.checks) == ((), ("c2pa", "metadata"))
    assert find_watermark(np.asarray(Image.open(buffer).convert("RGB"))) is None
    assert find_watermark(np.asarray(marked.resize((400, 400)))) is None  # resizing erases it too


def test_small_images_are_not_read_for_a_watermark():
    assert find_watermark(np.zeros((250, 250, 3), dtype=np.uint8)) is None


def test_a_malformed_manifest_is_a_finding_not_a_crash(tmp_path, chain, detector):
    signed = bytearray(sign_c2pa(_jpeg(), "image/jpeg", chain))
    jumbf = signed.index(b"jumb")
    signed[jumbf + 40 : jumbf + 400] = bytes(360)  # zero the manifest store's boxes
    result = detector.predict(_write(tmp_path, "broken.jpg", bytes(signed)))
    assert result.ok
    assert result.provenance.c2pa.state in ("error", "invalid")
    (finding,) = result.provenance.evidence
    assert finding.name in ("c2pa_error", "c2pa_invalid")
    # An unreadable manifest tells nothing; a readable but broken one is provenance that declares nothing.
    assert result.provenance.ai_declared is (None if finding.name == "c2pa_error" else False)
    assert result.decided_by == "model"


def test_hostile_metadata_is_clipped(tmp_path, detector):
    path = _write(tmp_path, "long.png", _png(Image.fromarray(_texture(64, 64, 1)), parameters="x" * 200_000))
    (finding,) = detector.predict(path).provenance.evidence
    assert len(finding.detail) <= 300


def test_bytes_and_decoded_inputs(chain, detector):
    signed = sign_c2pa(_jpeg(), "image/jpeg", chain)
    assert detector.predict(signed).decided_by == "provenance"  # bytes: the whole stage
    decoded = detector.predict(Image.open(io.BytesIO(signed)))
    assert decoded.provenance.checks == ("metadata",)  # no file bytes for C2PA; a JPEG
    assert detector.predict(np.asarray(Image.open(io.BytesIO(signed)))).provenance.checks == ("watermark",)


def test_face_mode_rows_carry_provenance(tmp_path, chain, detector):
    pytest.importorskip("dlib")
    path = _write(tmp_path, "generated.jpg", sign_c2pa(_jpeg(), "image/jpeg", chain))
    result = detector.predict(path, faces=True)
    assert result.faces == ()  # a texture: scored whole
    assert result.decided_by == "provenance"


def test_video_manifests_are_read(tmp_path, chain, detector):
    pytest.importorskip("av")
    from tests.media import write_video

    video = write_video(tmp_path / "clip.mp4", [Image.fromarray(_texture(64, 64, seed)) for seed in range(4)])
    plain = detector.predict_video(video)
    assert (plain.decided_by, plain.provenance.evidence, plain.provenance.ai_declared) == ("model", (), None)
    signed = _write(tmp_path, "generated.mp4", sign_c2pa(video.read_bytes(), "video/mp4", chain))
    result = detector.predict_video(signed)
    assert (result.verdict, result.decided_by) == ("fake", "provenance")
    assert result.to_dict()["provenance"]["c2pa"]["state"] == "valid"


def test_cli_rows_and_the_off_switch(tmp_path, chain, seed_checkpoint, capsys):
    path = _write(tmp_path, "generated.jpg", sign_c2pa(_jpeg(), "image/jpeg", chain))
    common = [str(path), "--model", str(seed_checkpoint), "--precision", "fp32"]
    assert main(["predict", *common, "--format", "jsonl"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["verdict"], row["decided_by"], row["provenance"]["ai_declared"]) == (
        "fake",
        "provenance",
        True,
    )
    assert main(["predict", *common, "--format", "csv"]) == 0
    header, line = capsys.readouterr().out.strip().splitlines()
    assert header.split(",")[-8:] == [
        "decided_by",
        "domain",
        "detector",
        "threshold",
        "uncertain_from",
        "threshold_from",
        "ai_declared",
        "provenance_evidence",
    ]
    assert "c2pa:c2pa_ai_generated=" in line
    assert main(["predict", *common, "--format", "jsonl", "--no-provenance"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["decided_by"], row["provenance"]) == ("model", None)


def test_a_bad_trust_list_is_a_clear_error(tmp_path, seed_checkpoint, capsys):
    anchors = _write(tmp_path, "anchors.pem", b"not a certificate")
    code = main(
        [
            "predict",
            str(_write(tmp_path, "a.jpg", _jpeg())),
            "--model",
            str(seed_checkpoint),
            "--c2pa-trust-anchors",
            str(anchors),
        ]
    )
    assert code != 0
    assert "anchors.pem: no PEM certificate" in capsys.readouterr().err


def test_a_missing_trust_list_is_a_clear_error(tmp_path):
    from deepfake_detector.provenance import ProvenanceError

    with pytest.raises(ProvenanceError, match=r"c2pa_trust_anchors=.*missing\.pem: cannot read"):
        ProvenanceOptions(str(tmp_path / "missing.pem"))


def test_evaluate_reports_what_provenance_decided(tmp_path, chain, detector):
    from deepfake_detector.data.labelled import LabelledImage
    from deepfake_detector.evaluation.evaluate import evaluate

    items = [
        LabelledImage(str(_write(tmp_path, f"real{seed}.jpg", _jpeg(seed))), "real") for seed in range(3)
    ]
    items += [
        LabelledImage(
            str(_write(tmp_path, f"fake{seed}.jpg", sign_c2pa(_jpeg(seed + 10), "image/jpeg", chain))), "fake"
        )
        for seed in range(3)
    ]
    report = evaluate(detector, items, tmp_path / "report", n_resamples=0)
    provenance = report.provenance
    assert (provenance["decided"], provenance["ai_declared"], provenance["with_evidence"]) == (3, 3, 3)
    # Every fake is decided, so with provenance nothing fake is missed, whatever the model says.
    assert provenance["with"]["fnr"] == 0.0
    assert provenance["with"]["roc_auc"] >= provenance["without"]["roc_auc"]
    assert report.overall.roc_auc == provenance["without"]["roc_auc"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Decided by provenance (valid C2PA AI declaration or Stable Diffusion watermark): 3 of 6" in text
    rows = (tmp_path / "report" / "predictions.csv").read_text().splitlines()
    assert rows[0].endswith("decided_by,domain,detector,ai_declared")
    assert sum(row.endswith("provenance,,model,True") for row in rows) == 3  # one head, no domain


def test_explain_and_predict_give_a_file_that_declares_itself_ai_the_same_verdict(tmp_path, chain, detector):
    """One verdict policy: the provenance stage runs before explain as before predict, so a watermarked
    PNG and a C2PA-signed AI JPEG are "fake", decided by provenance, in both (explain used to skip the
    stage and let the model alone decide)."""
    marked = sd_watermark(_texture(512, 512, 0), SDXL.bits)
    buffer = io.BytesIO()
    marked.save(buffer, "PNG")
    files = [
        _write(tmp_path, "sdxl.png", buffer.getvalue()),
        _write(tmp_path, "signed.jpg", sign_c2pa(_jpeg(), "image/jpeg", chain)),
    ]
    for path in files:
        predicted = detector.predict(path)
        for faces in (False, True):
            explained = detector.explain(path, faces=faces)
            assert (
                (explained.verdict, explained.decided_by)
                == (predicted.verdict, "provenance")
                == (
                    "fake",
                    "provenance",
                )
            ), (path, faces)
