"""Optional dependencies: a missing one names the extra that installs it; the package imports light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deepfake_detector.errors import MissingExtraError
from deepfake_detector.optional import require


def test_missing_optional_dependency_names_the_extra():
    with pytest.raises(MissingExtraError, match=r"pip install 'deepfake-detector\[video\]'") as caught:
        require("a_module_that_is_not_installed", "video")
    assert isinstance(caught.value, ImportError)
    assert require("json", "core").dumps([1]) == "[1]"


def test_importing_the_package_and_cli_does_no_heavy_work():
    code = (
        "import sys, deepfake_detector, deepfake_detector.cli.main; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
