"""Export checkpoints to other runtimes (ONNX) as folders that `Detector.from_pretrained` loads."""
