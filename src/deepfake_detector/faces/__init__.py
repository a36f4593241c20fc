"""Faces: find them (pluggable detector backends) and cut square crops around them with a margin.

This is a preprocessing stage: it knows nothing of the model (`crops` holds the face settings and the
one merge of a caller's choice over a checkpoint's). `deepfake_detector.inference.faces`
scores the crops.
"""
