"""Every command that loads a model has the same loading flags, generated from `DetectorConfig`, and they
reach the library as given."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from contextlib import redirect_stdout
from dataclasses import fields

import pytest

from deepfake_detector.cli.main import build_parser, main
from deepfake_detector.faces.crops import FaceOverrides
from deepfake_detector.inference.config import DetectorConfig, DetectorConfigError
from deepfake_detector.inference.detector import Detector
from deepfake_detector.scoring import Thresholds

LOADING_VERBS = ("predict", "info", "evaluate", "calibrate", "explain", "serve")
# The flags of each field (the special ones; every other field has --field-name).
EXPECTED = {
    "--model",
    "--revision",
    "--device",
    "--engine",
    "--precision",
    "--jpeg-draft",
    "--threshold",
    "--uncertain-band",
    "--faces",
    "--no-faces",
    "--face-detector",
    "--face-margin",
    "--face-strategy",
    "--max-pixels",
    "--allow-pickle",
    "--workers",
    "--no-provenance",
    "--c2pa-trust-anchors",
}


def _help(verb: str) -> str:
    buffer = io.StringIO()
    with redirect_stdout(buffer), pytest.raises(SystemExit) as exited:
        main([verb, "--help"])
    assert exited.value.code == 0
    return buffer.getvalue()


def _flags(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))


def test_every_field_of_the_declaration_has_its_flags():
    for item in fields(DetectorConfig):
        flag = "--" + item.name.replace("_", "-")
        assert flag in EXPECTED or item.name in ("thresholds", "faces", "provenance"), item.name


@pytest.mark.parametrize("verb", LOADING_VERBS)
def test_help_shows_the_same_loading_flags_for_every_verb_that_loads_a_model(verb):
    assert _flags(_help(verb)) >= EXPECTED, EXPECTED - _flags(_help(verb))


def test_python_dash_m_help_lists_them_too():
    # The documented way to look: a fresh interpreter, as a user types it.
    for verb in ("evaluate", "serve"):
        shown = subprocess.run(
            [sys.executable, "-m", "deepfake_detector", verb, "--help"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert _flags(shown) >= EXPECTED


def test_flags_become_the_config_as_given(seed_checkpoint):
    from deepfake_detector.cli.common import detector_config

    args = build_parser().parse_args(
        [
            "evaluate",
            "--data",
            "x.csv",
            "--out",
            "report",
            "--model",
            str(seed_checkpoint),
            "--precision",
            "fp32",
            "--jpeg-draft",
            "on",
            "--uncertain-band",
            "0.2",
            "0.8",
            "--face-margin",
            "1.5",
            "--workers",
            "0",
        ]
    )
    config = detector_config(args)
    assert config == DetectorConfig(
        model=str(seed_checkpoint),
        precision="fp32",
        jpeg_draft=True,
        thresholds=Thresholds(real=0.2, fake=0.8),
        faces=FaceOverrides(margin_ratio=1.5),
        workers=0,
    )
    detector = Detector.from_config(config, device="cpu")
    assert detector.engine.precision == "fp32" and detector.preprocessor.jpeg_draft is True
    assert detector.thresholds == Thresholds(real=0.2, fake=0.8)
    assert detector.face_options is None  # a margin alone does not switch face mode on


def test_the_config_refuses_bad_values_naming_the_parameter():
    with pytest.raises(DetectorConfigError, match="precision must be one of"):
        DetectorConfig(precision="fp16")
    with pytest.raises(DetectorConfigError, match="workers must be 0 or more"):
        DetectorConfig(workers=-1)
