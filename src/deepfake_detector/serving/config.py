"""The server's limits and batching settings, validated once, with the help text the CLI shows (its flags
are made from these fields by `deepfake_detector.settings`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from deepfake_detector.errors import DetectorError

# The environment variable read for the API key, so that the key need not appear in `ps` output.
API_KEY_ENV = "DEEPFAKE_DETECTOR_API_KEY"


class ServeConfigError(DetectorError):
    """A server setting is out of range; the message names the setting and what is accepted."""


@dataclass(frozen=True)
class ServeConfig:
    """Limits and micro-batching of the REST API.

    Memory is bounded by admission, not by hope: at most ``queue_size`` requests are admitted at once
    (received, decoded, waiting or being scored), each at most ``max_upload_bytes`` on the wire and
    ``max_images_per_request`` images of at most ``max_pixels`` pixels once decoded.
    """

    max_upload_bytes: int = field(
        default=20 * 1024 * 1024,
        metadata={"help": "largest request body in bytes, all files together (413 above it)"},
    )
    max_pixels: int = field(
        # A 40-megapixel image decodes to 120 MB of RGB; the library's default (89.5 MP) suits one
        # user's files better than a shared server's memory.
        default=40_000_000,
        metadata={"help": "largest image in pixels, checked before decoding (decompression-bomb guard)"},
    )
    max_images_per_request: int = field(
        default=16, metadata={"help": "most images in one /v1/predict request (422 above it)"}
    )
    max_video_seconds: float = field(
        default=120.0, metadata={"help": "longest video accepted by /v1/predict/video, in seconds"}
    )
    request_timeout_s: float = field(
        default=30.0,
        metadata={"help": "longest a request may take from its first byte to its answer (504 after it)"},
    )
    queue_size: int = field(
        default=32,
        metadata={
            "help": "most requests admitted at once (received, waiting or being scored); one more is "
            "answered 503 with Retry-After before its body is read"
        },
    )
    retry_after_s: int = field(
        default=1, metadata={"help": "the Retry-After (seconds) sent with 503 answers when the queue is full"}
    )
    max_batch_size: int = field(
        default=16, metadata={"help": "most images per model call when concurrent requests are batched"}
    )
    max_batch_wait_ms: float = field(
        default=10.0,
        metadata={
            "help": "longest the first image of a batch waits for others to join it, in milliseconds; "
            "0 scores whatever is waiting at once"
        },
    )
    api_key: str | None = field(
        default=None,
        repr=False,  # never in logs or tracebacks
        metadata={
            "help": f"require this key in the X-API-Key header of /v1 requests (or set {API_KEY_ENV}); "
            "default: no key",
            "metavar": "KEY",
        },
    )

    def __post_init__(self) -> None:
        for name in (
            "max_upload_bytes",
            "max_pixels",
            "max_images_per_request",
            "queue_size",
            "max_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ServeConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_video_seconds", "request_timeout_s"):
            if not getattr(self, name) > 0:
                raise ServeConfigError(
                    f"{name} must be a positive number of seconds, got {getattr(self, name)}"
                )
        if self.max_batch_wait_ms < 0:
            raise ServeConfigError(f"max_batch_wait_ms must not be negative, got {self.max_batch_wait_ms}")
        if self.retry_after_s < 0:
            raise ServeConfigError(f"retry_after_s must not be negative, got {self.retry_after_s}")
        if self.api_key is not None and not self.api_key.strip():
            raise ServeConfigError("api_key must not be empty; leave it unset to serve without a key")

    def limits(self) -> dict:
        """The settings a client may need to know (everything but the key)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "api_key"}
