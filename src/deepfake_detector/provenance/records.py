"""What the provenance stage found in one file, and the one rule that lets it change a verdict."""

from __future__ import annotations

import re
from dataclasses import dataclass

# The findings that decide a verdict on their own: a cryptographically intact C2PA manifest that
# declares AI generation, and a Stable Diffusion watermark read back (`find_watermark`). Metadata never
# decides.
DECISIVE_FINDINGS = ("c2pa_ai_generated", "sd_watermark")

# How long a quoted field may be in a finding: metadata is attacker-controlled and can be megabytes.
MAX_DETAIL_CHARS = 300


def clip_text(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis when it was longer."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class Finding:
    """One named piece of evidence.

    Attributes:
        check: Which check found it: "c2pa", "metadata" or "watermark".
        name: What it is, e.g. ``png_parameters``, ``exif_software``, ``c2pa_ai_generated``,
            ``sd_watermark``, ``c2pa_error``.
        detail: The matched field quoted (cut to `MAX_DETAIL_CHARS`), or what went wrong.
        ai_declared: True when the finding says the content was made by AI; None when it only
            describes the file (a generator-neutral field, or an error).
    """

    check: str
    name: str
    detail: str
    ai_declared: bool | None = None

    def to_dict(self) -> dict:
        return {"check": self.check, "name": self.name, "detail": self.detail}

    def flat(self) -> str:
        """One finding of a flat cell: ``check:name=detail``, a ``;`` or ``\\`` in the detail escaped
        with ``\\`` (`flatten_findings`)."""
        detail = self.detail.replace("\\", "\\\\").replace(";", "\\;")
        return f"{self.check}:{self.name}={detail}"


# Tokens of a flat cell: an escaped character, the separator, a run of plain text, or a lone ";".
_FLAT_TOKENS = re.compile(r"\\(.)|(; )|([^\\;]+|;|\\$)", re.S)


def flatten_findings(findings) -> str:
    """Findings as one CSV cell: each ``check:name=detail``, joined by ``"; "``.

    Details are attacker-controlled, so a ``;`` inside one is escaped (`Finding.flat`): a detail
    written to look like a second finding stays part of the first when the cell is read back
    (`parse_flat_findings`).
    """
    return "; ".join(finding.flat() for finding in findings)


def parse_flat_findings(text: str | None) -> list[Finding]:
    """A `flatten_findings` cell read back; a part that is not ``check:name=detail`` becomes an
    ``unknown``/``unparsed`` finding holding it."""
    if not text:
        return []
    parts, current = [], []
    for escaped, separator, plain in _FLAT_TOKENS.findall(text):
        if separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(escaped or plain)
    parts.append("".join(current))
    findings = []
    for part in parts:
        check, _, rest = part.partition(":")
        name, equals, detail = rest.partition("=")
        if equals and check and name:
            findings.append(Finding(check, name, detail))
        else:
            findings.append(Finding("unknown", "unparsed", part))
    return findings


@dataclass(frozen=True)
class C2paSummary:
    """The active C2PA manifest of a file, as `c2pa-python` validated it.

    Attributes:
        state: "trusted" (intact, signer in the trust list given), "valid" (intact: signature and
            hashes check out, but the signer is not in a trust list), "invalid" (tampered: a hash or the
            signature fails) or "error" (the manifest could not be read).
        claim_generator: The tool that wrote the manifest, as it names itself.
        ai_generated: Whether an assertion declares AI generation or AI compositing (an IPTC digital
            source type of trainedAlgorithmicMedia, compositeWithTrainedAlgorithmicMedia or
            algorithmicMedia).
        digital_source_type: That IPTC digital source type's code, when one is declared.
        problems: The validation failure codes (e.g. ``assertion.dataHash.mismatch``), or the error.
    """

    state: str
    claim_generator: str | None = None
    ai_generated: bool = False
    digital_source_type: str | None = None
    problems: tuple[str, ...] = ()

    @property
    def intact(self) -> bool:
        return self.state in ("trusted", "valid")

    def to_dict(self) -> dict:
        return {
            "state": self.state,
            "claim_generator": self.claim_generator,
            "ai_generated": self.ai_generated,
            "digital_source_type": self.digital_source_type,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class ProvenanceRecord:
    """Everything the provenance stage found in one input.

    Attributes:
        evidence: Every finding, in the order the checks ran (C2PA, metadata, watermark).
        c2pa: The C2PA summary when the file carries a manifest (or a broken one); None without one.
        checks: The checks that ran on this input ("c2pa", "metadata", "watermark"): a decoded image
            passed in memory has no file bytes to read a manifest or metadata from.
    """

    evidence: tuple[Finding, ...] = ()
    c2pa: C2paSummary | None = None
    checks: tuple[str, ...] = ()

    @property
    def ai_declared(self) -> bool | None:
        """True when any finding declares AI generation; False when the file carries provenance
        (a manifest, valid or not, or metadata) and none declares it; None when nothing was found or
        nothing could be read (only ``*_error`` findings)."""
        if any(finding.ai_declared for finding in self.evidence):
            return True
        found = [finding for finding in self.evidence if not finding.name.endswith("_error")]
        return False if found else None

    @property
    def decisive(self) -> tuple[Finding, ...]:
        """The findings that make the verdict "fake" by themselves (`DECISIVE_FINDINGS`)."""
        return tuple(finding for finding in self.evidence if finding.name in DECISIVE_FINDINGS)

    def to_dict(self) -> dict:
        return {
            "ai_declared": self.ai_declared,
            "evidence": [finding.to_dict() for finding in self.evidence],
            "c2pa": None if self.c2pa is None else self.c2pa.to_dict(),
            "checks": list(self.checks),
        }

    def flat(self) -> dict:
        """The CSV columns: ``ai_declared`` and ``provenance_evidence`` (`flatten_findings`)."""
        return {"ai_declared": self.ai_declared, "provenance_evidence": flatten_findings(self.evidence)}


def decide_verdict(model_verdict: str, record: ProvenanceRecord | None) -> tuple[str, str]:
    """The verdict a row reports, and what decided it ("model" or "provenance").

    The policy: a valid C2PA manifest declaring AI generation, or a watermark match, makes the
    verdict "fake", decided by provenance even where the model agrees. Metadata is shown but never
    changes it, and nothing ever turns a verdict to "real": provenance is easy to strip or forge,
    while a declaration of AI is a claim against the sender's interest.
    """
    if record is not None and record.decisive:
        return "fake", "provenance"
    return model_verdict, "model"
