"""Generator traces in an image's metadata: PNG text chunks, EXIF fields and XMP, as Pillow reads them.

Stable Diffusion front ends write their prompt and settings into the files they save (AUTOMATIC1111,
Forge and SD.Next a ``parameters`` text chunk, or EXIF UserComment in JPEGs; ComfyUI ``prompt`` and
``workflow``; InvokeAI ``invokeai_metadata``), and IPTC's ``DigitalSourceType`` in XMP declares how an
image was made. All of it is attacker-controlled and trivially stripped or forged, so it is evidence
to show, never a verdict (`deepfake_detector.provenance.records.decide_verdict`). Fields are quoted
cut to a few hundred characters, and only Pillow's own bounded readers touch the bytes.
"""

from __future__ import annotations

import re

from deepfake_detector.provenance.c2pa_manifest import AI_SOURCE_TYPES
from deepfake_detector.provenance.records import Finding, clip_text

# PNG text keys that only image generators write, with who writes them.
GENERATOR_TEXT_KEYS = {
    "parameters": "AUTOMATIC1111 / Forge / SD.Next generation parameters",
    "prompt": "ComfyUI prompt graph",
    "workflow": "ComfyUI workflow",
    "invokeai_metadata": "InvokeAI metadata",
    "sd-metadata": "InvokeAI (legacy) metadata",
    "dream": "InvokeAI (legacy) dream command",
    "novelai": "NovelAI",
}

# Generator and service names, matched as whole words in free-text fields (Software, Comment, ...).
GENERATOR_NAMES = re.compile(
    r"\b(stable[ -]?diffusion|sdxl|midjourney|dall[-·\u00b7 ]?e|firefly|imagen|novelai|comfyui|invokeai|"
    r"automatic1111|fooocus|leonardo\.ai|ideogram|flux\.1|dreamstudio|craiyon|bing image creator|"
    r"image creator from microsoft designer|nightcafe|playground ?ai|runway ?ml|gpt-4o|chatgpt)\b",
    re.IGNORECASE,
)
# AUTOMATIC1111's settings line ("Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: ..."): in a JPEG's
# EXIF UserComment it is the whole of its parameters.
A1111_SETTINGS = re.compile(r"Steps: ?\d+, ?Sampler: ?[^,\n]{1,40}, ?CFG scale: ?[\d.]+")

_XMP_SOURCE_TYPE = re.compile(r"DigitalSourceType[^>]{0,200}?[=>]\s*\"?\s*([^\"<\s]{1,300})")
_XMP_CREATOR_TOOL = re.compile(r"CreatorTool[^>]{0,50}?[=>]\s*\"?([^\"<]{1,300})")
_MAX_XMP_CHARS = 1_000_000  # Pillow already caps text chunks (1 MB) and JPEG segments (64 kB)

# EXIF tags of the main IFD and of the Exif sub-IFD that tools write their names and notes into.
_EXIF_FIELDS = {0x0131: "exif_software", 0x010E: "exif_image_description", 0x013B: "exif_artist"}
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286


def _user_comment(value) -> str:
    """EXIF UserComment: an 8-byte character-code prefix, then the text."""
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes):
        return str(value)
    prefix, text = value[:8], value[8:]
    if prefix.startswith(b"UNICODE"):
        for encoding in ("utf-16-be", "utf-16-le"):
            try:
                return text.decode(encoding)
            except UnicodeDecodeError:
                continue
    return text.decode("utf-8", "replace")


def _text_findings(name: str, text: str) -> list[Finding]:
    """A finding when free text names a generator or carries AUTOMATIC1111's settings line."""
    found = A1111_SETTINGS.search(text) or GENERATOR_NAMES.search(text)
    if not found:
        return []
    return [Finding("metadata", name, clip_text(text), ai_declared=True)]


def _png_text_findings(info: dict) -> list[Finding]:
    findings = []
    for key, value in info.items():
        if not isinstance(key, str) or not isinstance(value, (str, bytes)):
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if key.lower() in GENERATOR_TEXT_KEYS:
            label = GENERATOR_TEXT_KEYS[key.lower()]
            findings.append(
                Finding("metadata", f"png_{key.lower()}", clip_text(f"{label}: {text}"), ai_declared=True)
            )
        elif key.lower() in ("software", "comment", "description", "title", "author", "source"):
            findings.extend(_text_findings(f"png_{key.lower()}", text))
    return findings


def _exif_findings(image) -> list[Finding]:
    exif = image.getexif()
    findings = []
    for tag, name in _EXIF_FIELDS.items():
        if tag in exif:
            findings.extend(_text_findings(name, str(exif[tag])))
    comment = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if comment is not None:
        findings.extend(_text_findings("exif_user_comment", _user_comment(comment)))
    return findings


def _xmp_findings(xmp) -> list[Finding]:
    text = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else str(xmp)
    text = text[:_MAX_XMP_CHARS]
    findings = []
    for match in _XMP_SOURCE_TYPE.finditer(text):
        code = match.group(1).rstrip("/").rsplit("/", 1)[-1]
        findings.append(
            Finding(
                "metadata",
                "xmp_digital_source_type",
                clip_text(match.group(1)),
                ai_declared=code in AI_SOURCE_TYPES,
            )
        )
        break  # one declaration is the file's; repeats add nothing
    tool = _XMP_CREATOR_TOOL.search(text)
    if tool:
        findings.extend(_text_findings("xmp_creator_tool", tool.group(1)))
    return findings


def find_metadata(image) -> list[Finding]:
    """Generator traces in a decoded image's metadata.

    Args:
        image: The Pillow image as the file was decoded (``load()`` done, so that PNG text chunks after
            the pixel data are in its ``info`` too), before any conversion.

    Returns:
        Findings in the order PNG text, EXIF, XMP. A field Pillow cannot parse becomes a
        ``metadata_error`` finding; it never raises.
    """
    findings: list[Finding] = []
    for reader, argument in (
        (_png_text_findings, image.info if image.format == "PNG" else None),
        (_exif_findings, image),
        (_xmp_findings, image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")),
    ):
        if argument is None:
            continue
        try:
            findings.extend(reader(argument))
        except Exception as error:  # a malformed EXIF block or chunk is the sender's problem, not ours
            findings.append(
                Finding("metadata", "metadata_error", clip_text(f"{type(error).__name__}: {error}"))
            )
    return findings
