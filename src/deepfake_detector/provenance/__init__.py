"""Provenance before pixels: C2PA content credentials, generator metadata and the Stable Diffusion
invisible watermark, read from each input before the model scores it (`ProvenanceOptions`)."""

from deepfake_detector.provenance.records import (
    C2paSummary,
    Finding,
    ProvenanceRecord,
    decide_verdict,
)
from deepfake_detector.provenance.stage import ProvenanceError, ProvenanceOptions

__all__ = [
    "C2paSummary",
    "Finding",
    "ProvenanceError",
    "ProvenanceOptions",
    "ProvenanceRecord",
    "decide_verdict",
]
