"""Exception types raised at the library's boundaries.

Every message says what was wrong and what is accepted, so the CLI and the API can show it as is.
"""


class DetectorError(Exception):
    """Base class for every error this package raises on purpose."""


class CheckpointError(DetectorError):
    """A checkpoint could not be found, downloaded or trusted."""


class LabelMappingError(CheckpointError):
    """A checkpoint's labels cannot be mapped to the real and fake roles."""


class ImageLoadError(DetectorError):
    """One input could not be read as an image. The message names the input and the problem."""


class MissingExtraError(ImportError, DetectorError):
    """An optional dependency is not installed; the message names the extra to install."""


class ExplainError(DetectorError):
    """A heatmap method does not apply to this checkpoint, or is not a method at all."""


class ImageTooLargeError(ImageLoadError):
    """An image has more pixels than the decompression-bomb limit allows."""


class VideoLoadError(DetectorError):
    """One video could not be read at all. The message names the file and the problem."""


class EngineError(DetectorError):
    """The requested engine or precision does not exist or cannot run this checkpoint here."""


class ExportError(DetectorError):
    """An export could not be written, or it does not score like the PyTorch model."""


class ManifestError(DetectorError):
    """A manifest (a file listing inputs) can't be read, or lacks the column that holds the inputs."""
