"""Map a checkpoint's ``id2label`` to the two roles this tool reasons about: real and fake.

The seed model family has shipped both label orders, so the index of the fake class is never assumed:
it is found by name, here and only here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from deepfake_detector.errors import LabelMappingError

REAL_NAMES = frozenset(
    {"real", "realism", "authentic", "original", "genuine", "pristine", "bonafide", "natural", "live"}
)
FAKE_NAMES = frozenset(
    {
        "fake",
        "deepfake",
        "synthetic",
        "generated",
        "manipulated",
        "forged",
        "forgery",
        "spoof",
        "spoofed",
        "tampered",
        "swapped",
        "faceswap",
        "artificial",
        "ai",
        "aigenerated",
    }
)


@dataclass(frozen=True)
class LabelRoles:
    """Which class indices of a checkpoint are real and which are fake.

    Attributes:
        id2label: The checkpoint's labels, index to name.
        real_ids: Indices whose label names a real image.
        fake_ids: Indices whose label names a fake image; their probabilities add up to the fake score.
    """

    id2label: Mapping[int, str]
    real_ids: tuple[int, ...]
    fake_ids: tuple[int, ...]

    def role_of(self, index: int) -> str:
        """Returns ``"real"`` or ``"fake"`` for a class index."""
        return "fake" if index in self.fake_ids else "real"

    def to_dict(self) -> dict:
        return {
            "real": [self.id2label[i] for i in self.real_ids],
            "fake": [self.id2label[i] for i in self.fake_ids],
        }

    def label_for(self, verdict: str | None) -> str | None:
        """The checkpoint's class name for a verdict: what a result row's deprecated ``label`` says.

        "fake" is the fake class's name (e.g. "Deepfake"), "real" the real class's (e.g. "Realism");
        a role with several classes is all their names joined by "/" in index order (e.g.
        "Deepfake/Synthetic"), because the fake score is the sum over all of them: the verdict is
        about the role, never about one of its classes. "uncertain" stays "uncertain"; no verdict
        (an error row) is None. So ``label`` can never disagree with ``verdict``; it used to be the
        checkpoint's top class (the verdict at 0.5 instead of the calibrated threshold).
        """
        if verdict is None or verdict == "uncertain":
            return verdict
        if verdict not in ("real", "fake"):
            raise ValueError(f"verdict must be real, fake or uncertain, got {verdict!r}")
        ids = self.fake_ids if verdict == "fake" else self.real_ids
        return "/".join(self.id2label[i] for i in ids)


def _tokens(label: str) -> set[str]:
    # "Real_Images", "deep-fake", "AIGenerated" and "Realism" must all resolve, so match whole words
    # after splitting on punctuation and camel case, plus the whole name with separators removed.
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", label)
    words = [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]
    return set(words) | {"".join(words)}


def role_of_label(name: str) -> str | None:
    """The role a class name stands for, with the same name rules as `resolve_label_roles`.

    Args:
        name: A class name such as "Deepfake", "real_images" or "AIGenerated".

    Returns:
        ``"real"``, ``"fake"``, or None when the name names neither role or both.
    """
    tokens = _tokens(str(name))
    is_real, is_fake = bool(tokens & REAL_NAMES), bool(tokens & FAKE_NAMES)
    if is_real == is_fake:
        return None
    return "fake" if is_fake else "real"


def resolve_label_roles(id2label: Mapping[int | str, str]) -> LabelRoles:
    """Finds the real and fake classes of a checkpoint by their names, case-insensitively.

    Args:
        id2label: ``config.id2label`` of an image-classification checkpoint (keys may be str in JSON).

    Returns:
        The role of every class.

    Raises:
        LabelMappingError: A label names neither role or both, or one role has no label. The message
            lists the checkpoint's labels and the names that are accepted.
    """
    labels = {int(index): str(name) for index, name in id2label.items()}
    real_ids, fake_ids, unknown = [], [], []
    for index in sorted(labels):
        role = role_of_label(labels[index])
        if role is None:
            unknown.append(labels[index])
        elif role == "fake":
            fake_ids.append(index)
        else:
            real_ids.append(index)
    if unknown or not real_ids or not fake_ids:
        shown = ", ".join(f"{i}: {labels[i]!r}" for i in sorted(labels))
        problem = (
            f"cannot tell whether {', '.join(map(repr, unknown))} means real or fake"
            if unknown
            else f"no label names the {'real' if not real_ids else 'fake'} class"
        )
        raise LabelMappingError(
            f"checkpoint labels {{{shown}}}: {problem}. "
            f"Accepted real names: {', '.join(sorted(REAL_NAMES))}; "
            f"fake names: {', '.join(sorted(FAKE_NAMES))}. Rename the classes in the checkpoint's "
            "config.json (id2label/label2id)."
        )
    return LabelRoles(id2label=labels, real_ids=tuple(real_ids), fake_ids=tuple(fake_ids))
