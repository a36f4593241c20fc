"""The real/fake roles come from label names, in either order, and unmappable labels are refused."""

from __future__ import annotations

import pytest

from deepfake_detector.errors import LabelMappingError
from deepfake_detector.modeling.labels import resolve_label_roles


@pytest.mark.parametrize(
    ("id2label", "real_ids", "fake_ids"),
    [
        ({0: "Realism", 1: "Deepfake"}, (0,), (1,)),
        ({0: "Deepfake", 1: "Realism"}, (1,), (0,)),
        ({"0": "fake", "1": "real"}, (1,), (0,)),  # keys as strings, as in config.json
        ({0: "REAL", 1: "FAKE"}, (0,), (1,)),
        ({0: "Real_Images", 1: "Fake_Images"}, (0,), (1,)),
        ({0: "authentic", 1: "AIGenerated"}, (0,), (1,)),
        ({0: "original", 1: "manipulated"}, (0,), (1,)),
        ({0: "genuine", 1: "synthetic", 2: "generated"}, (0,), (1, 2)),
        ({0: "deep-fake", 1: "bona fide"}, (1,), (0,)),
    ],
)
def test_roles_are_found_by_name(id2label, real_ids, fake_ids):
    roles = resolve_label_roles(id2label)
    assert roles.real_ids == real_ids
    assert roles.fake_ids == fake_ids


@pytest.mark.parametrize(
    ("id2label", "message"),
    [
        ({0: "LABEL_0", 1: "LABEL_1"}, "cannot tell whether 'LABEL_0', 'LABEL_1'"),
        ({0: "cat", 1: "fake"}, "cannot tell whether 'cat'"),
        ({0: "real", 1: "authentic"}, "no label names the fake class"),
        ({0: "fake", 1: "deepfake"}, "no label names the real class"),
        ({0: "real fake", 1: "fake"}, "cannot tell whether 'real fake'"),
    ],
)
def test_unmappable_labels_are_refused_with_the_labels_shown(id2label, message):
    with pytest.raises(LabelMappingError) as caught:
        resolve_label_roles(id2label)
    text = str(caught.value)
    assert message in text
    for name in id2label.values():
        assert repr(name) in text  # the error shows what the checkpoint has
    assert "id2label" in text  # and how to fix it
