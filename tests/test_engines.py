"""Engines and precisions: how they are chosen, and that each keeps the answers within its bar."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepfake_detector import Detector
from deepfake_detector.cli.main import main
from deepfake_detector.inference.engines import CpuFeatures, EngineError, resolve_engine
from deepfake_detector.inference.parity import compute_score_parity
from deepfake_detector.inference.preprocessing import ImagePreprocessor
from deepfake_detector.io.images import load_image

NO_BF16 = CpuFeatures(avx2=True)
AMX = CpuFeatures(amx=True, avx512_bf16=True, avx512=True, avx2=True)


def _scores(detector: Detector, paths) -> tuple[np.ndarray, np.ndarray]:
    predictions = detector.predict([str(path) for path in paths], batch_size=7)
    assert all(prediction.ok for prediction in predictions)
    return (
        np.array([prediction.fake_score for prediction in predictions]),
        np.array([prediction.label for prediction in predictions]),
    )


@pytest.fixture(scope="module")
def exact_scores(seed_checkpoint, varied_images):
    return _scores(Detector.from_pretrained(seed_checkpoint, precision="fp32", engine="torch"), varied_images)


def test_auto_picks_bf16_only_where_the_cpu_computes_it():
    pick = lambda cpu, device="cpu": resolve_engine(  # noqa: E731
        "auto", "auto", onnx_precision=None, device=device, cpu=cpu
    )
    assert (pick(AMX).engine, pick(AMX).precision) == ("torch", "bf16")
    assert pick(CpuFeatures(avx512_bf16=True)).precision == "bf16"
    assert pick(NO_BF16).precision == "fp32" and "no native bf16" in pick(NO_BF16).reason
    assert pick(AMX, device="cuda").precision == "fp32"
    explicit = resolve_engine("torch", "fp32", onnx_precision=None, device="cpu", cpu=AMX)
    assert explicit.precision == "fp32" and explicit.reason == "precision='fp32' was asked for"


def test_a_cached_int8_export_runs_where_auto_would_not_pick_amx_bf16_or_where_asked(tmp_path):
    cached = tmp_path / "exports" / "m-int8-static"

    def pick(engine="auto", precision="auto", cpu=NO_BF16, device="cpu"):
        choice = resolve_engine(
            engine, precision, onnx_precision=None, device=device, cpu=cpu, cached_int8=cached
        )
        return choice.engine, choice.precision, choice.folder

    assert pick() == ("onnx", "int8", cached)
    assert pick(cpu=CpuFeatures(avx512_bf16=True)) == ("onnx", "int8", cached)  # faster than bf16 there
    assert pick(cpu=AMX) == ("torch", "bf16", None)
    assert pick(cpu=AMX, precision="int8") == pick(cpu=AMX, engine="onnx") == ("onnx", "int8", cached)
    assert pick(precision="fp32") == pick(engine="torch") == ("torch", "fp32", None)
    assert pick(device="cuda") == ("torch", "fp32", None)


def test_auto_picks_the_onnx_export_at_its_own_precision():
    choice = resolve_engine("auto", "auto", onnx_precision="int8", device="cpu", cpu=AMX)
    assert (choice.engine, choice.precision) == ("onnx", "int8")


@pytest.mark.parametrize(
    ("engine", "precision", "onnx_precision", "device", "message"),
    [
        ("tensorrt", "auto", None, "cpu", "engine='tensorrt' is not an engine; choose one of: auto, torch"),
        ("auto", "fp16", None, "cpu", "precision='fp16' is not a precision; choose one of: auto, fp32"),
        ("onnx", "auto", None, "cpu", "deepfake-detector export --format onnx"),
        ("torch", "auto", "fp32", "cpu", "engine='torch' needs PyTorch weights"),
        ("auto", "int8", "fp32", "cpu", "precision='int8' does not match this ONNX export, which is fp32"),
        ("auto", "auto", "fp32", "cuda", "engine='onnx' runs on the CPU only"),
        ("auto", "int8", None, "cpu", "precision='int8' runs an int8 export, which checks its parity"),
    ],
)
def test_impossible_choices_name_the_parameter_and_the_fix(
    engine, precision, onnx_precision, device, message
):
    with pytest.raises(EngineError) as raised:
        resolve_engine(engine, precision, onnx_precision=onnx_precision, device=device, cpu=NO_BF16)
    assert message in str(raised.value)


def test_cli_rejects_unknown_precision_and_engine_with_the_accepted_values(seed_checkpoint, capsys):
    for flag, value in (("--precision", "fp16"), ("--engine", "tensorrt")):
        with pytest.raises(SystemExit) as raised:
            main(["predict", "x.jpg", "--model", str(seed_checkpoint), flag, value])
        assert raised.value.code == 2
        error = capsys.readouterr().err
        assert f"argument {flag}: invalid choice: '{value}'" in error and "auto" in error


def test_from_pretrained_rejects_onnx_engine_for_a_pytorch_checkpoint(seed_checkpoint):
    with pytest.raises(EngineError, match="needs an exported folder"):
        Detector.from_pretrained(seed_checkpoint, engine="onnx")


def test_fp32_torch_is_exact_and_decodes_whole_images(seed_checkpoint, varied_images, exact_scores):
    detector = Detector.from_pretrained(seed_checkpoint, precision="fp32", engine="torch", workers=0)
    assert detector.preprocessor.draft_size is None
    scores, labels = _scores(detector, varied_images)
    np.testing.assert_array_equal(scores, exact_scores[0])
    np.testing.assert_array_equal(labels, exact_scores[1])


@pytest.mark.filterwarnings("ignore:precision='bf16' on a CPU without")
def test_bf16_meets_the_parity_bar(seed_checkpoint, varied_images, exact_scores):
    detector = Detector.from_pretrained(seed_checkpoint, precision="bf16", jpeg_draft=False)
    assert (detector.engine.name, detector.engine.precision) == ("torch", "bf16")
    assert detector.engine_choice.reason == "precision='bf16' was asked for"
    scores, labels = _scores(detector, varied_images)
    report = compute_score_parity(exact_scores[0], scores, exact_scores[1], labels)
    assert report.passed, report.describe()
    assert report.max_score_diff > 0  # it really ran at another precision


def test_bf16_without_hardware_support_warns_that_it_is_slow(seed_checkpoint, monkeypatch):
    from deepfake_detector.inference import engines

    monkeypatch.setattr(engines, "detect_cpu_features", lambda: NO_BF16)
    with pytest.warns(RuntimeWarning, match="emulates bf16 matrix multiplies here, far slower than fp32"):
        Detector.from_pretrained(seed_checkpoint, precision="bf16")


def test_jpeg_draft_decodes_large_photos_smaller_and_keeps_scores(seed_checkpoint, varied_images):
    exact = Detector.from_pretrained(seed_checkpoint, precision="fp32", engine="torch")
    draft = Detector.from_pretrained(seed_checkpoint, precision="fp32", engine="torch", jpeg_draft=True)
    camera = next(path for path in varied_images if path.name == "camera.jpg")  # 2000x1500
    assert draft.preprocessor.draft_size == (60, 60)  # twice the 30 px input
    assert load_image(camera, draft_size=draft.preprocessor.draft_size).size == (250, 188)  # 1/8 scale
    small = next(path for path in varied_images if path.name == "small.jpg")
    assert load_image(small, draft_size=(60, 60)).size == (30, 30)  # not far larger: decoded whole
    png = next(path for path in varied_images if path.name == "square-large.png")
    assert load_image(png, draft_size=(60, 60)).size == (512, 512)  # JPEG only
    exact_scores, draft_scores = _scores(exact, varied_images), _scores(draft, varied_images)
    report = compute_score_parity(exact_scores[0], draft_scores[0], exact_scores[1], draft_scores[1])
    assert report.passed, report.describe()
    assert report.max_score_diff > 0  # the camera photo really was decoded differently


def test_resizing_first_gives_the_processors_exact_pixels(seed_checkpoint, varied_images):
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(seed_checkpoint)
    preprocessor = ImagePreprocessor(processor)
    assert preprocessor._resize_to == (30, 30)  # the shortcut is really taken
    for path in varied_images:
        image = load_image(path)
        expected = processor(images=[image], return_tensors="np")["pixel_values"][0]
        np.testing.assert_array_equal(preprocessor(image), expected)


def test_processors_with_other_resizing_take_their_own_path():
    from transformers import ViTImageProcessor

    shortest = ViTImageProcessor(size={"shortest_edge": 40})
    preprocessor = ImagePreprocessor(shortest, jpeg_draft=True)
    assert preprocessor._resize_to is None and preprocessor.draft_size == (80, 80)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    expected = shortest(images=[image], return_tensors="np")["pixel_values"][0]
    np.testing.assert_array_equal(preprocessor(image), expected)


def test_info_reports_the_engine_and_precision(seed_checkpoint, capsys):
    assert main(["info", "--model", str(seed_checkpoint), "--precision", "fp32", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert '"engine": "torch"' in out and '"precision": "fp32"' in out


@pytest.mark.parametrize("resample", [2, 3])
def test_the_numpy_processor_gives_transformers_pixels_bit_for_bit(varied_images, tmp_path, resample):
    import json

    from transformers import AutoImageProcessor, ViTImageProcessor

    from deepfake_detector.modeling.image_processor import NumpyImageProcessor, load_image_processor

    ViTImageProcessor(size={"height": 48, "width": 40}, resample=resample).save_pretrained(tmp_path)
    ours = load_image_processor(tmp_path, without_transformers=True)
    assert isinstance(ours, NumpyImageProcessor)
    theirs = AutoImageProcessor.from_pretrained(tmp_path)
    for path in varied_images:
        image = load_image(path)
        expected = theirs(images=[image], return_tensors="np")["pixel_values"]  # (1, 3, 48, 40)
        np.testing.assert_array_equal(ours(images=[image])["pixel_values"], expected)
        np.testing.assert_array_equal(ImagePreprocessor(ours)(image), expected[0])
    settings = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert ours.to_dict() == settings  # what `info` describes


@pytest.mark.parametrize(
    "change",
    [
        {"size": {"shortest_edge": 40}},
        {"do_center_crop": True, "crop_size": {"height": 30, "width": 30}},
        {"image_processor_type": "CLIPImageProcessor"},
        {"do_normalize": False},
        {"resample": 9},
        {"some_new_setting": 1},
    ],
)
def test_other_processor_forms_are_left_to_transformers(tmp_path, change):
    import json

    from transformers import ViTImageProcessor

    from deepfake_detector.modeling.image_processor import NumpyImageProcessor, load_image_processor

    ViTImageProcessor(size={"height": 30, "width": 30}).save_pretrained(tmp_path)
    file = tmp_path / "preprocessor_config.json"
    settings = json.loads(file.read_text())
    assert NumpyImageProcessor.supports(settings)
    assert not NumpyImageProcessor.supports({**settings, **change})
    if "resample" not in change:  # transformers itself loads every other form
        file.write_text(json.dumps({**settings, **change}))
        loaded = load_image_processor(tmp_path, without_transformers=True)
        assert not isinstance(loaded, NumpyImageProcessor)


def test_cpu_features_come_from_the_kernels_flags_on_linux(tmp_path):
    import sys

    import torch

    from deepfake_detector.inference.engines import _read_linux_cpu_flags, detect_cpu_features

    cpuinfo = tmp_path / "cpuinfo"
    two_cpus = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_tile\n\nprocessor\t: 1\nflags\t: sse\n"
    cpuinfo.write_text(two_cpus)
    assert _read_linux_cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "avx512f", "amx_tile"}
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd\n")  # an Arm CPU: no x86 flags
    assert _read_linux_cpu_flags(str(cpuinfo)) is None
    assert _read_linux_cpu_flags(str(tmp_path / "missing")) is None
    if not sys.platform.startswith("linux"):
        return
    found = detect_cpu_features()  # the kernel's flags agree with PyTorch's cpuinfo on this machine
    assert found.amx == torch.cpu._is_amx_tile_supported()
    assert found.avx512_bf16 == torch.cpu._is_avx512_bf16_supported()
    assert found.avx512 == torch.cpu._is_avx512_supported()
    assert found.avx2 == torch.cpu._is_avx2_supported()


def test_auto_device_is_the_cpu_for_an_export_and_for_a_cpu_build_of_pytorch():
    from deepfake_detector.inference.loading import _cpu_only_torch_build, _resolve_device

    assert _resolve_device("auto", onnx_export=True) == "cpu"
    assert _resolve_device("cuda:1", onnx_export=False) == "cuda:1"
    cpu_build = "__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\nhip: Optional[str] = None\n"
    assert _cpu_only_torch_build(cpu_build)
    assert not _cpu_only_torch_build(cpu_build.replace("cuda: Optional[str] = None", "cuda = '12.8'"))
    assert not _cpu_only_torch_build(cpu_build.replace("hip: Optional[str] = None", "hip = '6.4.1'"))
