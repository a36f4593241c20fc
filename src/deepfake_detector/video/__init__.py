"""Video: sample frames with PyAV (`decode`), score them and combine their scores into the video's
(`scoring`), and plot a scored video's timeline (`timeline`).

Frames are scored like images, through a `deepfake_detector.inference.scorer.Scorer`; frame scores
become a video score in `deepfake_detector.aggregation`.
"""
