"""Evaluation: metrics, reports and plots, the robustness sweep, and calibration on held-out data."""
