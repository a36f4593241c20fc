"""C2PA content credentials, read and validated by `c2pa-python` (the Content Authenticity
Initiative's official bindings to the c2pa-rs reference implementation).

Nothing here parses a manifest by hand: the library finds the manifest store in the file, checks the
claim signature and the hashes that bind it to the content, and reports what failed. This module only
reads its verdict and the AI-generation declarations of the active manifest.
"""

from __future__ import annotations

import io
import json
from functools import lru_cache

from deepfake_detector.provenance.records import C2paSummary, Finding, clip_text

# IPTC digital source types that declare generative AI (https://cv.iptc.org/newscodes/digitalsourcetype/).
AI_SOURCE_TYPES = (
    "trainedAlgorithmicMedia",
    "compositeWithTrainedAlgorithmicMedia",
    "algorithmicMedia",
    "compositeSynthetic",
)

# Manifest stores beyond this size are not validated: a real one is kilobytes (with a thumbnail, a
# few hundred); a huge one is an attack on the reader's memory and time.
MAX_MANIFEST_FILE_BYTES = 512 * 1024 * 1024

_STATES = {"Trusted": "trusted", "Valid": "valid", "Invalid": "invalid"}


def too_large() -> Finding:
    """The finding of a file over `MAX_MANIFEST_FILE_BYTES`, which is not read for a manifest."""
    return Finding("c2pa", "c2pa_error", f"file over {MAX_MANIFEST_FILE_BYTES:,} bytes, not read")


@lru_cache(maxsize=4)
def _context(trust_anchors_pem: str | None):
    """A c2pa Context that never goes to the network (no remote manifests, no OCSP), trusting the
    given PEM anchors when there are any."""
    import c2pa

    settings: dict = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
    if trust_anchors_pem:
        settings["trust"] = {"trust_anchors": trust_anchors_pem}
    return c2pa.Context(c2pa.Settings.from_json(json.dumps(settings)))


def _declared_source_types(manifest: dict) -> list[str]:
    """Every IPTC digital source type code an assertion of the manifest declares (actions, or the
    IPTC/XMP metadata assertions), last path component only."""
    found = []

    def visit(value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key.lower().endswith("digitalsourcetype") and isinstance(item, str):
                    found.append(item.rstrip("/").rsplit("/", 1)[-1])
                else:
                    visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    visit(manifest.get("assertions", []))
    return found


def _claim_generator(manifest: dict) -> str | None:
    info = manifest.get("claim_generator_info")
    if isinstance(info, list) and info and isinstance(info[0], dict):
        name, version = info[0].get("name"), info[0].get("version")
        if name:
            return clip_text(f"{name} {version}" if version else str(name), 120)
    generator = manifest.get("claim_generator")
    return clip_text(generator, 120) if isinstance(generator, str) else None


def read_c2pa(
    data: bytes, mime_type: str | None = None, *, trust_anchors_pem: str | None = None
) -> tuple[C2paSummary | None, list[Finding]]:
    """The file's active C2PA manifest, validated, and the findings it gives.

    Args:
        data: The original file bytes, before any decoding.
        mime_type: The format ("image/jpeg", "video/mp4"); None lets the library detect it.
        trust_anchors_pem: PEM root certificates to trust; without them an intact manifest is "valid"
            (its signer unknown), never "trusted".

    Returns:
        (None, []) when the file has no manifest. A malformed or unreadable manifest gives an "error"
        summary and a ``c2pa_error`` finding: never an exception, since the bytes are the sender's.
    """
    import c2pa

    if len(data) > MAX_MANIFEST_FILE_BYTES:
        return None, [too_large()]
    try:
        reader = c2pa.Reader.try_create(mime_type or "", io.BytesIO(data), None, _context(trust_anchors_pem))
        if reader is None:
            return None, []
        with reader:
            state = reader.get_validation_state()
            results = reader.get_validation_results() or {}
            manifest = reader.get_active_manifest() or {}
    except Exception as error:  # c2pa raises its own error classes, and hostile bytes may trip others
        if "NotSupported" in type(error).__name__ or "type is unsupported" in str(error):
            return None, []  # a format C2PA does not define (BMP, say): nothing to read
        message = clip_text(f"{type(error).__name__.lstrip('_')}: {error}")
        return C2paSummary("error", problems=(message,)), [Finding("c2pa", "c2pa_error", message)]
    active = results.get("activeManifest", {}) if isinstance(results, dict) else {}
    problems = tuple(
        str(failure.get("code")) for failure in active.get("failure", []) if isinstance(failure, dict)
    )
    source_types = _declared_source_types(manifest)
    ai_type = next((code for code in source_types if code in AI_SOURCE_TYPES), None)
    summary = C2paSummary(
        state=_STATES.get(str(state), "invalid"),
        claim_generator=_claim_generator(manifest),
        ai_generated=ai_type is not None,
        digital_source_type=ai_type or (source_types[0] if source_types else None),
        problems=problems,
    )
    return summary, _findings(summary)


def _findings(summary: C2paSummary) -> list[Finding]:
    generator = summary.claim_generator or "an unnamed tool"
    signer = "trusted signer" if summary.state == "trusted" else "signer not in a trust list"
    if not summary.intact:
        problems = ", ".join(summary.problems) or "validation failed"
        declared = f"; it declares {summary.digital_source_type}" if summary.ai_generated else ""
        # A broken manifest's claims prove nothing, so the finding is not an AI declaration.
        return [
            Finding("c2pa", "c2pa_invalid", clip_text(f"manifest by {generator} fails: {problems}{declared}"))
        ]
    if summary.ai_generated:
        return [
            Finding(
                "c2pa",
                "c2pa_ai_generated",
                f"manifest by {generator} declares {summary.digital_source_type} ({summary.state}, {signer})",
                ai_declared=True,
            )
        ]
    return [
        Finding(
            "c2pa",
            "c2pa_manifest",
            clip_text(f"manifest by {generator}, no AI declaration ({summary.state}, {signer})"),
            ai_declared=False,
        )
    ]
