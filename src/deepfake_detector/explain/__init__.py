"""Heatmaps of where a checkpoint sees the fake: attention rollout and Grad-CAM for ViT checkpoints,
Grad-CAM for convolutional ones (ResNet, ConvNeXt, RegNet).

``heatmaps`` turns one image into a map at the image's size, ``rollout`` and ``gradcam`` are the two
methods, ``overlay`` draws a map over its image. `Detector.explain` is the entry point; nothing here is
imported until it is called, so the package costs nothing to the rest of the tool.
"""
