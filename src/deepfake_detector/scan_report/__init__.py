"""Scan reports: one self-contained HTML page of a run's results, to look at rather than read.

`load_result_rows` reads what ``predict`` wrote (JSON Lines, JSON, CSV, or a folder of Ray shards);
`render_report` writes the page: a summary (counts per verdict, errors, a histogram of fake scores with
the thresholds, each domain's for a model with domains, the model and settings that scored them, what
provenance checks found) over one card per input (thumbnail with its faces boxed, verdict, score bar,
provenance evidence, error, a video's per-frame timeline, and explain's heatmap when there is one),
sorted and filtered in the page. Nothing is scored again.
"""

from deepfake_detector.scan_report.page import ScanReport, render_report
from deepfake_detector.scan_report.rows import ResultsFileError, load_overlay_paths, load_result_rows
from deepfake_detector.scan_report.settings import RunSettings, resolve_run_settings
from deepfake_detector.scan_report.summary import compute_summary

__all__ = [
    "ResultsFileError",
    "RunSettings",
    "ScanReport",
    "compute_summary",
    "load_overlay_paths",
    "load_result_rows",
    "render_report",
    "resolve_run_settings",
]
