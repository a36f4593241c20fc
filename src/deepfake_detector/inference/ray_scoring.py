"""Batch scoring on a Ray cluster: millions of files, scored by a pool of actors that each hold one
`Detector`, written as Parquet or JSON Lines shards that a rerun resumes.

Ray Data does the distributed work (scheduling, the actor pool, back-pressure, restarting dead actors
and retrying their batches); nothing here is a home-made engine. What this module adds:

- **Inputs.** The driver lists what it is given: local files, folders and globs exactly as the local
  ``predict`` does (`expand_inputs`, so rows carry the same ``source``), URIs of object stores with
  ``pyarrow.fs`` (`deepfake_detector.io.objectstore`, the layer Ray Data lists them with), and
  manifests through `load_manifest` (the CLI). Sources already in the output folder are dropped
  there, so a rerun scores only what is missing.
- **Scoring.** `BatchScorer` runs in each actor of a Ray Data actor pool (``map_batches``): it builds
  its `Detector` once from the `DetectorConfig` it receives as is (the arguments of
  `Detector.from_pretrained`: engine, precision, device, face mode and the rest, as for local
  ``predict``) and scores one batch per Ray task with
  `Detector.iter_predict_media`, so every row, error rows included, is the row local ``predict``
  writes. One task is one batch: an actor killed mid-batch costs that batch alone, which Ray re-runs
  on the restarted actor (``max_restarts``, ``max_task_retries``).
- **Output.** The driver streams the rows back and writes them with `ShardWriter`: each shard goes to a
  temporary file renamed into place, so a killed job leaves only whole shards. Ray's own
  ``write_parquet``/``write_json`` write each file in place, so a job killed mid-write could leave a half
  file that a rerun would count as done; a single writer also gives exact counts (the exit code) and
  costs little, as a row is a few hundred bytes next to the megabytes of image it came from.

The CLI exposes this as ``deepfake-detector predict ... --ray [ADDRESS]`` (`deepfake_detector.cli.
ray_scoring`) rather than as a new command: the flags, the rows and the exit codes are those of
``predict``; only where the work runs and where the rows go change.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from deepfake_detector.errors import DetectorError
from deepfake_detector.faces.crops import FaceChoice
from deepfake_detector.inference.config import DetectorConfig
from deepfake_detector.io.inputs import InputProblem, ScanStats, expand_inputs, is_uri
from deepfake_detector.io.shards import SHARD_FORMATS, ShardWriter, encode_rows, open_shard_folder
from deepfake_detector.optional import require
from deepfake_detector.results import Prediction, VideoPrediction
from deepfake_detector.settings import at_least, non_negative_float, positive_float, positive_int

if TYPE_CHECKING:
    from deepfake_detector.aggregation import FrameAggregation
    from deepfake_detector.video.decode import FrameSampling


class RayScoringError(DetectorError):
    """A Ray scoring job can't start (bad setting, no cluster) or failed; the message says what to do."""


# One flag sets both of Ray's retry counts.
_RETRIES_FLAG = {"flag": "--ray-retries", "type": at_least(-1), "metavar": "N"}


@dataclass(frozen=True)
class RayScoringConfig:
    """Where and how a Ray scoring job runs, and how its output is cut into shards.

    ``predict --ray`` makes its Ray flags from these fields (`deepfake_detector.settings`); ``batch_size``,
    ``format`` and ``verbose`` come from its own ``--batch-size``, ``--format`` and ``--quiet``.
    """

    address: str | None = field(
        default=None,
        metadata={
            "help": "the Ray cluster to join when Ray is not initialised yet: none given, the one "
            "`ray start` started on this machine (or RAY_ADDRESS), else a local one started for the job; "
            "or the one at HOST:6379 (auto, ray://HOST:10001)",
            "flag": "--ray",
            "nargs": "?",
            "const": "",  # --ray without an address: the flag given, the address left to Ray
            "metavar": "ADDRESS",
        },
    )
    num_actors: int | None = field(
        default=None,
        metadata={
            "help": "actors, each holding one detector (default: as many as the cluster's CPUs, or its GPUs "
            "when actors reserve GPUs, allow, at most one per batch)",
            "flag": "--ray-actors",
            "type": positive_int,
            "metavar": "N",
        },
    )
    num_cpus_per_actor: float = field(
        default=1.0,
        metadata={
            "help": "CPUs Ray reserves per actor (also its PyTorch thread count)",
            "flag": "--ray-cpus-per-actor",
            "type": positive_float,
            "metavar": "CPUS",
        },
    )
    num_gpus_per_actor: float = field(
        default=0.0,
        metadata={
            "help": "GPUs Ray reserves per actor (0: score on CPUs; 0.5: two per GPU)",
            "flag": "--ray-gpus-per-actor",
            "type": non_negative_float,
            "metavar": "GPUS",
        },
    )
    batch_size: int = field(
        default=8,
        metadata={
            "help": "inputs per model call and per Ray task; an actor killed mid-task loses this much "
            "work, which Ray redoes"
        },
    )
    rows_per_shard: int = field(
        default=1024,
        metadata={
            "help": "rows per output shard; a killed driver loses at most the rows not yet written",
            "type": positive_int,
            "metavar": "N",
        },
    )
    format: str = field(default="parquet", metadata={"help": f"shard format: {' or '.join(SHARD_FORMATS)}"})
    # Bounded rather than Ray Data's default of forever: a file that crashes the decoder's process
    # (not a Python error, which becomes an error row) would otherwise kill actor after actor.
    max_restarts: int = field(
        default=3,
        metadata={"help": "times Ray restarts an actor that died (-1: without limit)", **_RETRIES_FLAG},
    )
    max_task_retries: int = field(
        default=3,
        metadata={
            "help": "times Ray retries the batch of an actor that died (-1: without limit)",
            **_RETRIES_FLAG,
        },
    )
    verbose: bool = field(
        default=True, metadata={"help": "Ray's progress bars and INFO logs on stderr (False: warnings only)"}
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "rows_per_shard"):
            if getattr(self, name) < 1:
                raise RayScoringError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_actors is not None and self.num_actors < 1:
            raise RayScoringError(f"num_actors must be at least 1, got {self.num_actors}")
        if not self.num_cpus_per_actor > 0:
            raise RayScoringError(f"num_cpus_per_actor must be positive, got {self.num_cpus_per_actor}")
        if self.num_gpus_per_actor < 0:
            raise RayScoringError(f"num_gpus_per_actor must be 0 or more, got {self.num_gpus_per_actor}")
        if self.format not in SHARD_FORMATS:
            raise RayScoringError(f"format must be {' or '.join(SHARD_FORMATS)}, got {self.format!r}")
        for name in ("max_restarts", "max_task_retries"):
            if getattr(self, name) < -1:
                raise RayScoringError(f"{name} must be -1 (no limit) or more, got {getattr(self, name)}")


@dataclass(frozen=True)
class RayScoringResult:
    """What one run of a scoring job did.

    Attributes:
        output_dir: The folder of shards.
        scored: Rows this run wrote (error rows included).
        failed: Of those, error rows.
        skipped: Inputs left out because earlier runs' shards already hold them.
        shards: The shards this run wrote.
        num_actors: Actors that scored (0 when there was nothing to score).
        elapsed_s: Wall time of the run, listing and start-up included.
    """

    output_dir: str
    scored: int
    failed: int
    skipped: int
    shards: tuple[str, ...] = ()
    num_actors: int = 0
    elapsed_s: float = 0.0

    def to_dict(self) -> dict:
        return {
            "output_dir": self.output_dir,
            "scored": self.scored,
            "failed": self.failed,
            "skipped": self.skipped,
            "shards": list(self.shards),
            "num_actors": self.num_actors,
            "elapsed_s": self.elapsed_s,
        }


def expand_sources(
    inputs: Iterable[str], *, recursive: bool = False, stats: ScanStats | None = None
) -> Iterator[str | InputProblem]:
    """Local files, folders and globs as `expand_inputs` yields them (images and videos), and URIs
    as `deepfake_detector.io.objectstore.expand_uri` lists them, in the order given."""
    stats = stats if stats is not None else ScanStats()
    for given in inputs:
        if is_uri(given):
            from deepfake_detector.io.objectstore import expand_uri

            yield from expand_uri(given, recursive=recursive, stats=stats, videos=True)
        else:
            yield from expand_inputs([given], recursive=recursive, stats=stats, videos=True)


class BatchScorer:
    """The work of one Ray actor: one `Detector`, one batch of sources per call, rows out.

    Ray Data constructs it in each actor of the pool (``map_batches``); it is not meant to be called
    directly, but it is an ordinary class so a test can.
    """

    def __init__(
        self, detector: DetectorConfig, media: dict, fmt: str, summary: bool, batch_size: int
    ) -> None:
        """Loads the detector, once for the actor's lifetime.

        Args:
            detector: How to load the detector (on this actor's own device).
            media: Keyword arguments of `Detector.iter_predict_media`: ``faces``, ``sampling``,
                ``aggregation``.
            fmt: Shard format of the rows returned.
            summary: Face mode: Parquet rows carry face and frame counts.
            batch_size: Images (or face crops) per model call.
        """
        from transformers.utils import logging as hf_logging

        from deepfake_detector.inference.detector import Detector

        hf_logging.disable_progress_bar()  # a load bar per actor is noise in the driver's forwarded logs
        self.detector = Detector.from_config(detector)
        self.media = media
        self.format = fmt
        self.summary = summary
        self.batch_size = batch_size

    def __call__(self, batch):
        """Scores a batch: an Arrow table of ``source`` and ``problem`` (an error message or null);
        returns the rows, an Arrow table of `deepfake_detector.io.shards.shard_schema`."""
        sources = batch.column("source").to_pylist()
        problems = batch.column("problem").to_pylist()
        with contextlib.ExitStack() as stack:
            fetched: dict[str, str] = {}  # local copy -> URI
            items: list[str | InputProblem] = []
            scratch = None  # a folder for fetched copies, made for the first URI, removed after the batch
            for index, (source, problem) in enumerate(zip(sources, problems, strict=True)):
                if problem is not None:
                    items.append(InputProblem(source, problem))
                elif is_uri(source):
                    if scratch is None:
                        scratch = stack.enter_context(
                            tempfile.TemporaryDirectory(prefix="deepfake-detector-")
                        )
                    items.append(self._fetch(source, index, scratch, fetched))
                else:
                    items.append(source)
            predictions = self.detector.iter_predict_media(items, batch_size=self.batch_size, **self.media)
            rows = [_restore_uri(prediction, fetched) for prediction in predictions]
        return encode_rows(rows, self.format, summary=self.summary)

    @staticmethod
    def _fetch(uri: str, index: int, scratch: str, fetched: dict[str, str]) -> str | InputProblem:
        from deepfake_detector.io.objectstore import fetch_uri

        # Keep the suffix: images and videos are told apart by it, as for local files.
        local = fetch_uri(uri, Path(scratch) / f"{index:05d}{Path(uri.split('?', 1)[0]).suffix}")
        if isinstance(local, str):
            fetched[local] = uri
        return local


def _restore_uri(prediction: Prediction | VideoPrediction, fetched: dict[str, str]):
    """A row scored from a fetched local copy, named by its URI again (source and messages)."""
    local = str(prediction.source)
    uri = fetched.get(local)
    if uri is None:
        return prediction
    changes: dict = {"source": uri}
    if prediction.error is not None:
        changes["error"] = prediction.error.replace(local, uri)
    if isinstance(prediction, VideoPrediction) and prediction.decode_problem is not None:
        changes["decode_problem"] = prediction.decode_problem.replace(local, uri)
    return replace(prediction, **changes)


def score_with_ray(
    inputs: Iterable[str],
    output_dir: str | os.PathLike,
    detector: DetectorConfig | None = None,
    config: RayScoringConfig | None = None,
    *,
    recursive: bool = False,
    faces: FaceChoice = None,
    sampling: FrameSampling | None = None,
    aggregation: FrameAggregation | None = None,
    stats: ScanStats | None = None,
    on_rows: Callable[[int], None] | None = None,
    preflight: bool = True,
) -> RayScoringResult:
    """Scores images and videos on a Ray cluster into a folder of shards, skipping what it holds.

    Ray is initialised when it is not yet (``config.address``) and shut down again afterwards; a
    caller that initialised Ray itself keeps its cluster.

    Args:
        inputs: Files, folders, glob patterns and URIs (``s3://bucket/prefix/``), as `expand_sources`
            lists them. Workers read them where they run: local paths need a filesystem every node
            mounts at the same place; URIs work anywhere the store's credentials are set.
        output_dir: The folder of shards (created when missing). Rows already in it are not scored
            again.
        detector: How each actor loads its detector (face mode included); default: the bundled model
            with the defaults.
        config: Cluster, pool, batch and shard settings; default: `RayScoringConfig()`.
        recursive: Descend into sub-folders and sub-prefixes.
        faces: Face mode for this call, as for `Detector.predict` (None: as ``detector.faces`` and the
            checkpoint say).
        sampling: Video frame sampling, as for `Detector.predict_video`.
        aggregation: How frame scores make a video's, as for `Detector.predict_video`.
        stats: Receives counts of files that folder scans passed over (not image or video suffixes).
        on_rows: Called in this process with the number of rows each scored batch brought back.
        preflight: Load the detector once here, on the CPU, before starting Ray, so that a bad
            checkpoint or engine fails now with the library's own error rather than in every actor.
            False when the caller has just done so. The checkpoint's face settings are read from its
            config either way, without loading the weights.

    Returns:
        What this run did: rows written and failed, inputs skipped as done, shards written.

    Raises:
        CheckpointError: The checkpoint can't be loaded (checked here, before any actor starts).
        EngineError: The engine or precision can't run this checkpoint.
        ShardFolderError: The output folder can't hold these shards (a file, or another format).
        RayScoringError: Ray can't be reached, or the job failed; the shards written so far are kept,
            and a rerun continues from them.
    """
    started = time.perf_counter()
    detector = detector or DetectorConfig()
    config = config or RayScoringConfig()
    if preflight:
        from deepfake_detector.inference.detector import Detector

        Detector.from_config(detector, device="cpu", workers=0)
    # Whether rows carry face summaries is known before any actor starts, from the checkpoint's config
    # alone; each actor resolves the same ``faces`` over the same checkpoint, so they agree.
    summary = detector.resolve_faces(faces) is not None
    media = {"faces": faces, "sampling": sampling, "aggregation": aggregation}
    done = open_shard_folder(output_dir, config.format, summary=summary)
    pending: list[tuple[str, str | None]] = []
    skipped = 0
    for item in expand_sources(inputs, recursive=recursive, stats=stats):
        source, problem = (item.source, item.error) if isinstance(item, InputProblem) else (item, None)
        if source in done:
            skipped += 1
        else:
            pending.append((source, problem))
    writer = ShardWriter(output_dir, config.format, rows_per_shard=config.rows_per_shard)
    num_actors = 0
    if pending:
        with _ray_session(config) as ray:
            num_actors = _pool_size(ray, config, len(pending))
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
                dataset = _build_dataset(ray, pending, config.batch_size).map_batches(
                    BatchScorer,
                    fn_constructor_kwargs={
                        "detector": detector,
                        "media": media,
                        "fmt": config.format,
                        "summary": summary,
                        "batch_size": config.batch_size,
                    },
                    batch_size=config.batch_size,
                    batch_format="pyarrow",
                    compute=ray.data.ActorPoolStrategy(size=num_actors),
                    num_cpus=config.num_cpus_per_actor,
                    num_gpus=config.num_gpus_per_actor or None,
                    udf_modifying_row_count=False,
                    **_retry_arguments(config),
                )
            try:
                for rows in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                    writer.add(rows)
                    if on_rows is not None:
                        on_rows(rows.num_rows)
            except ray.exceptions.RayError as error:
                writer.close()
                raise RayScoringError(
                    f"the Ray job failed ({_describe_failure(error)}); the "
                    f"{writer.rows} rows written so far are in {output_dir}, and a rerun continues from them"
                ) from error
            finally:
                writer.close()  # whatever came back is whole rows: keep them, even on failure
    return RayScoringResult(
        output_dir=os.fspath(output_dir),
        scored=writer.rows,
        failed=writer.failed,
        skipped=skipped,
        shards=tuple(str(path) for path in writer.written),
        num_actors=num_actors,
        elapsed_s=time.perf_counter() - started,
    )


@contextlib.contextmanager
def _ray_session(config: RayScoringConfig):
    """Ray, initialised for the job unless the caller did it; Ray Data's progress bars as configured."""
    ray = require("ray", "ray")
    require("ray.data", "ray")  # imported as attributes of ray from here on
    require("ray.exceptions", "ray")
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(
                address=config.address, logging_level=logging.INFO if config.verbose else logging.WARNING
            )
        except Exception as error:  # Ray raises bare Exception when a local node fails to start in time
            where = f"at {config.address!r}" if config.address else "on this machine"
            raise RayScoringError(
                f"cannot start or reach a Ray cluster {where} ({type(error).__name__}: {error}); give a "
                "running cluster's address (HOST:6379, from `ray start --head`), or, for a local one, "
                "retry when this machine's CPUs are less busy (Ray gives a new node 30 s to start)"
            ) from None
    context = ray.data.DataContext.get_current()
    data_logger = logging.getLogger("ray.data")
    shown, level = context.enable_progress_bars, data_logger.level
    context.enable_progress_bars = config.verbose
    if not config.verbose:
        data_logger.setLevel(logging.WARNING)
    try:
        yield ray
    finally:
        context.enable_progress_bars = shown
        data_logger.setLevel(level)
        if started_here:
            ray.shutdown()


def _pool_size(ray, config: RayScoringConfig, pending: int) -> int:
    """``num_actors``, else as many actors as the cluster has room for, but no more than batches.

    Raises:
        RayScoringError: Not even one actor fits the cluster as it is (it would wait forever).
    """
    resources = ray.cluster_resources()
    rooms = []
    for kind, per_actor in (("CPU", config.num_cpus_per_actor), ("GPU", config.num_gpus_per_actor)):
        if per_actor:
            have = resources.get(kind, 0)
            if have < per_actor:
                raise RayScoringError(
                    f"each actor asks for {per_actor:g} {kind}s but the Ray cluster has {have:g}; lower "
                    f"--ray-{kind.lower()}s-per-actor, or add nodes that have them"
                )
            rooms.append(int(have // per_actor))
    if config.num_actors is not None:
        return config.num_actors
    return max(1, min(*rooms, math.ceil(pending / config.batch_size)))


def _build_dataset(ray, pending: list[tuple[str, str | None]], batch_size: int):
    """The sources as a Ray dataset of one block per batch, so that one Ray task scores one batch."""
    pa = require("pyarrow", "ray")
    blocks = []
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        blocks.append(
            pa.table(
                {
                    "source": pa.array([source for source, _ in chunk], pa.string()),
                    "problem": pa.array([problem for _, problem in chunk], pa.string()),
                }
            )
        )
    return ray.data.from_arrow(blocks)


def _retry_arguments(config: RayScoringConfig) -> dict:
    """``max_restarts``/``max_task_retries`` for the pool's actors.

    Ray Data 2.60 takes them only through its extra ``ray_remote_args``, which it has deprecated in
    favour of named parameters that do not cover these two yet; `score_with_ray` silences that
    warning around its call.
    """
    return {"max_restarts": config.max_restarts, "max_task_retries": config.max_task_retries}


# "AttributeError: message" at the start of a line of a traceback, as Ray's error text carries it.
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (.*)$", re.M)


def _describe_failure(error: BaseException) -> str:
    """What broke in a failed Ray job: the first exception of the worker's traceback that is not one of
    Ray's wrappers (Ray's errors carry the remote traceback as text, without the exception chain)."""
    for name, message in _EXCEPTION_LINE.findall(str(error)):
        if not name.startswith("ray."):
            return f"{name}: {message}"
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"
