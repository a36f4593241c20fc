"""``python -m deepfake_detector`` runs the command-line interface."""

from deepfake_detector.cli.main import entry_point

entry_point()
