"""Faces: find them (pluggable detector backends) and cut square crops around them with a margin.

This is a preprocessing stage: it knows nothing of the model. `deepfake_detector.inference.faces`
scores the crops.
"""
