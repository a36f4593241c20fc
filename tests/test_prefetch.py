"""Decoding ahead of the model in threads: same rows, same order, error rows kept, memory bounded."""

from __future__ import annotations

import itertools
import random
import time

import pytest

from deepfake_detector import Detector
from deepfake_detector.inference.prefetch import map_ordered
from deepfake_detector.io.inputs import InputProblem


def test_map_ordered_keeps_input_order_whatever_finishes_first():
    delays = random.Random(0)

    def slow_square(value: int) -> int:
        time.sleep(delays.uniform(0, 0.004))
        return value * value

    assert list(map_ordered(slow_square, range(60), workers=4, window=9)) == [v * v for v in range(60)]
    assert list(map_ordered(slow_square, range(5), workers=0, window=1)) == [0, 1, 4, 9, 16]


def test_map_ordered_runs_at_most_a_window_ahead_of_the_consumer():
    pulled = itertools.count()

    def source():
        for value in itertools.count():  # endless, like a huge folder
            next(pulled)
            yield value

    results = map_ordered(lambda value: value, source(), workers=3, window=5)
    assert [next(results) for _ in range(20)] == list(range(20))
    assert next(pulled) <= 20 + 5  # read no further ahead than the window
    results.close()  # dropping the stream early cancels the queued work and returns


def test_map_ordered_rejects_bad_settings():
    with pytest.raises(ValueError, match="workers must be 0 or more"):
        list(map_ordered(str, [1], workers=-1, window=2))
    with pytest.raises(ValueError, match="window must be at least 1"):
        list(map_ordered(str, [1], workers=1, window=0))


def _mixed_inputs(varied_images, tmp_path):
    paths = [str(path) for path in varied_images]
    broken = tmp_path / "broken.jpg"
    jpeg = next(path for path in varied_images if path.name == "vga.jpg")
    broken.write_bytes(jpeg.read_bytes()[:2000])  # headers and a little data, then the file ends
    inputs = []
    for index, path in enumerate(paths):
        inputs.append(path)
        if index % 5 == 1:
            inputs.append(str(tmp_path / f"missing-{index}.jpg"))
        if index % 7 == 3:
            inputs.append(InputProblem(f"pattern-{index}/*.png", f"pattern-{index}/*.png: no files match"))
    inputs.insert(4, str(broken))
    return inputs


@pytest.mark.parametrize(("workers", "batch_size"), [(1, 1), (2, 3), (4, 8), (3, 64)])
def test_threaded_iter_predict_keeps_order_and_error_rows(
    seed_checkpoint, varied_images, tmp_path, workers, batch_size
):
    detector = Detector.from_pretrained(seed_checkpoint, precision="fp32", engine="torch")
    inputs = _mixed_inputs(varied_images, tmp_path)
    sequential = list(detector.iter_predict(inputs, batch_size=batch_size, workers=0))
    threaded = list(detector.iter_predict(iter(inputs), batch_size=batch_size, workers=workers))
    assert [row.to_dict() for row in threaded] == [row.to_dict() for row in sequential]
    sources = [item if isinstance(item, str) else item.source for item in inputs]
    assert [row.source for row in threaded] == sources
    failed = [row for row in threaded if not row.ok]
    assert len(failed) == len(inputs) - len(varied_images)
    assert any("truncated" in row.error for row in failed)
    assert any("no such file" in row.error for row in failed)
    assert any("no files match" in row.error for row in failed)


def test_iter_predict_is_lazy_on_an_endless_stream(seed_checkpoint, varied_images):
    detector = Detector.from_pretrained(seed_checkpoint, precision="fp32", engine="torch", workers=2)
    pulled = itertools.count()

    def endless():
        for path in itertools.cycle(varied_images):
            next(pulled)
            yield str(path)

    rows = detector.iter_predict(endless(), batch_size=4)
    assert all(row.ok for row in itertools.islice(rows, 10))
    rows.close()
    assert next(pulled) <= 10 + 2 * 4 + 4  # one batch in hand, at most two more being read
