"""Video: sample frames with PyAV (`decode`) and plot a scored video's timeline (`timeline`).

Frames are scored like images, by `deepfake_detector.inference.video` through a
`deepfake_detector.inference.scorer.Scorer`; frame scores become a video score in
`deepfake_detector.aggregation`.
"""
