"""Inference engines: what runs the model step (pixel values in, logits out), and at which precision.

The `Detector` resolves the user's ``engine`` and ``precision`` once with `resolve_engine`, builds the
engine with `build_engine`, and then only calls ``compute_logits``; loading, preprocessing and scoring
are the same for every engine.

- ``torch`` runs the checkpoint's PyTorch model: ``fp32`` (the exact answers of the transformers
  pipeline) or ``bf16`` (weights cast to bfloat16: fast only on CPUs with AMX or AVX512-BF16, emulated
  and far slower elsewhere).
- ``onnx`` runs a folder written by ``deepfake-detector export --format onnx`` with ONNX Runtime, at
  the precision it was exported with (``fp32``, or ``int8`` with ``--quantize int8`` or
  ``int8-static``). An int8-static export also holds its fp32 graph and scores again, with it, the rows
  whose int8 outputs lie near a decision (`ExactRecheck`), so that int8 keeps the verdicts.

int8 exists only as an export, because the export checks the parity bar before it writes anything.
PyTorch's own dynamic quantisation (``torch.ao``, deprecated) was as fast here but missed the bar in
the throughput benchmark (top-1 agreement 99.0% over 300 files on ViT-B/16, where ONNX Runtime's int8
export, with 8-bit activations and 7-bit weights, kept 99.7%).

``auto`` precision is bf16 where the CPU computes it natively (AMX or AVX512-BF16), else fp32; for an
export folder, the export's own precision. int8 only runs when the user exported it: an export needs
calibration images and checks its parity on held-out ones, and how far int8 moves the answers depends
on the weights (with ``--quantize int8``, activations are quantised per batch, so an image's score
also moves slightly with the other images in its batch).
``benchmarks/throughput.py`` measures every option on your images.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from deepfake_detector.errors import EngineError
from deepfake_detector.optional import require
from deepfake_detector.scoring import ModelOutputs

PRECISIONS = ("auto", "fp32", "bf16", "int8")
ENGINES = ("auto", "torch", "onnx")
ONNX_FILE = "model.onnx"
# An int8 export's fp32 graph, which scores again the rows the int8 graph put near a decision.
EXACT_ONNX_FILE = "model.fp32.onnx"
# Written by `deepfake_detector.export.onnx.export_onnx` beside the ONNX file: precision, parity, versions.
EXPORT_INFO_FILE = "export.json"


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's matrix instructions that decide which precision is fast.

    Attributes:
        amx: Intel AMX tiles (bf16 and int8 matrix multiply), e.g. Sapphire Rapids and later.
        avx512_bf16: AVX512-BF16 dot products, e.g. Cooper Lake, AMD Zen 4 and later.
        avx512: AVX-512 foundation instructions.
        avx2: AVX2.
    """

    amx: bool = False
    avx512_bf16: bool = False
    avx512: bool = False
    avx2: bool = False

    @property
    def native_bf16(self) -> bool:
        """Whether bf16 matrix multiplies run in hardware (without, PyTorch emulates them slowly)."""
        return self.amx or self.avx512_bf16

    def describe(self) -> str:
        names = [name for name in ("amx", "avx512_bf16", "avx512", "avx2") if getattr(self, name)]
        return ", ".join(names) or "none of amx, avx512_bf16, avx512, avx2"


def detect_cpu_features() -> CpuFeatures:
    """What this CPU supports, at run time: the kernel's CPU flags on Linux (read without importing
    PyTorch, which a detector running an ONNX export never needs), else PyTorch's cpuinfo."""
    flags = _read_linux_cpu_flags()
    if flags is not None:
        return CpuFeatures(
            amx="amx_tile" in flags and "amx_bf16" in flags,
            avx512_bf16="avx512_bf16" in flags,
            avx512={"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags,
            avx2="avx2" in flags,
        )
    import torch

    def supported(name: str) -> bool:
        # Private helpers of torch.cpu (present since 2.3); a torch without them reports no feature,
        # which only means the safe choice, fp32.
        check = getattr(torch.cpu, name, None)
        return bool(check()) if check is not None else False

    return CpuFeatures(
        amx=supported("_is_amx_tile_supported"),
        avx512_bf16=supported("_is_avx512_bf16_supported"),
        avx512=supported("_is_avx512_supported"),
        avx2=supported("_is_avx2_supported"),
    )


def _read_linux_cpu_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The first processor's x86 flags in ``/proc/cpuinfo`` (the kernel lists only what it enables,
    AMX included); None where there is no such file or line (other systems, other architectures)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return set(value.split())
    except OSError:
        return None
    return None


def supports_native_bf16(device: str) -> bool:
    """Whether ``device`` computes bf16 matrix multiplies natively, where bf16 is worth choosing:
    inference's ``precision="auto"`` and training's ``bf16: auto`` both ask here.

    Args:
        device: "cpu", "cuda" or "cuda:N".
    """
    if device == "cpu":
        return detect_cpu_features().native_bf16
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass(frozen=True)
class EngineChoice:
    """The engine and precision that will run, and why.

    Attributes:
        engine: "torch" or "onnx".
        precision: "fp32", "bf16" or "int8".
        reason: Why this was picked, for ``info`` and logs.
        folder: The export folder to load instead of the checkpoint's own (its int8-static export in
            the cache); None: the checkpoint's.
    """

    engine: str
    precision: str
    reason: str
    folder: Path | None = None

    @property
    def exact(self) -> bool:
        """Whether this run gives the transformers pipeline's answers (PyTorch in fp32), whether asked
        for or chosen by "auto": then nothing else may trade accuracy for speed (no JPEG draft)."""
        return self.engine == "torch" and self.precision == "fp32"


def resolve_engine(
    engine: str,
    precision: str,
    *,
    onnx_precision: str | None,
    device: str,
    cpu: CpuFeatures,
    cached_int8: Path | None = None,
) -> EngineChoice:
    """Turns the user's ``engine`` and ``precision`` (either may be "auto") into what will run.

    Args:
        engine: One of `ENGINES`.
        precision: One of `PRECISIONS`; "int8" only for an int8 export.
        onnx_precision: The precision of the checkpoint folder's ONNX export, None for a PyTorch
            checkpoint.
        device: The resolved device, "cpu" or "cuda[:N]".
        cpu: This CPU's features.
        cached_int8: The int8-static export of this checkpoint in the cache
            (``fetch-backbone --int8-static``), None when there is none. "auto" runs it on a CPU without
            AMX (where it measured fastest: 1.12x and 1.22x bf16 end to end in two runs on an AVX512-BF16
            EPYC, and bf16 is not native without AVX512-BF16); ``engine="onnx"`` or
            ``precision="int8"`` run it anywhere.

    Raises:
        EngineError: An unknown value, or a combination this checkpoint or machine can't run; the
            message names the parameter and what is accepted.
    """
    if engine not in ENGINES:
        raise EngineError(f"engine={engine!r} is not an engine; choose one of: {', '.join(ENGINES)}")
    if precision not in PRECISIONS:
        raise EngineError(
            f"precision={precision!r} is not a precision; choose one of: {', '.join(PRECISIONS)}"
        )
    if onnx_precision is not None:
        if engine == "torch":
            raise EngineError(
                "engine='torch' needs PyTorch weights, but this folder holds an ONNX export; use engine "
                "'onnx' (or 'auto'), or load the checkpoint it was exported from"
            )
        if precision not in ("auto", onnx_precision):
            raise EngineError(
                f"precision={precision!r} does not match this ONNX export, which is {onnx_precision}; use "
                f"precision={onnx_precision!r} (or 'auto'), or export again "
                f"(export_onnx{'(quantize=int8)' if precision == 'int8' else ''})"
            )
        if device != "cpu":
            raise EngineError(f"engine='onnx' runs on the CPU only; use device='cpu', not {device!r}")
        return EngineChoice("onnx", onnx_precision, "the checkpoint folder is an ONNX export")
    if cached_int8 is not None and device == "cpu" and engine != "torch" and precision in ("auto", "int8"):
        if engine == "onnx" or precision == "int8":
            return EngineChoice(
                "onnx",
                "int8",
                f"engine={engine!r}, precision={precision!r}: the int8-static export of this model in the "
                f"cache ({cached_int8})",
                cached_int8,
            )
        if not cpu.amx:
            return EngineChoice(
                "onnx",
                "int8",
                f"auto: this CPU has no AMX ({cpu.describe()}), and the int8-static export of this model in "
                f"the cache ({cached_int8}) is faster than PyTorch there",
                cached_int8,
            )
    if engine == "onnx":
        raise EngineError(
            "engine='onnx' needs an exported folder; write one with `export_onnx` (`deepfake-detector "
            "export --format onnx`) and load that folder"
        )
    if precision == "int8":
        raise EngineError(
            "precision='int8' runs an int8 export, which checks its parity before it is written; create "
            "one with `export_onnx(..., quantize='int8')` (`deepfake-detector export --quantize int8`) "
            "and load that folder"
        )
    if precision != "auto":
        return EngineChoice("torch", precision, f"precision={precision!r} was asked for")
    if device != "cpu":
        return EngineChoice("torch", "fp32", f"auto on {device}: fp32, the exact answers")
    if cpu.native_bf16:
        return EngineChoice("torch", "bf16", f"auto: this CPU computes bf16 natively ({cpu.describe()})")
    return EngineChoice(
        "torch",
        "fp32",
        f"auto: this CPU has no native bf16 ({cpu.describe()}), so fp32 is the fastest PyTorch precision; "
        "an int8 export is faster (for the default model, `deepfake-detector fetch-backbone --int8-static` "
        "builds it once and auto then runs it)",
    )


class Engine(Protocol):
    """Runs the model step. ``compute_outputs`` takes (B, 3, H, W) float32 pixel values as the
    checkpoint's image processor makes them and returns the (B, num_labels) float32 logits with, for a
    model with domains, the domain probe's (B, domains) logits; ``compute_logits`` the logits alone."""

    name: str
    precision: str

    def compute_outputs(self, pixel_values: np.ndarray) -> ModelOutputs: ...

    def compute_logits(self, pixel_values: np.ndarray) -> np.ndarray: ...


class TorchEngine:
    """The PyTorch model, in fp32 or bf16.

    Args:
        model: A transformers image-classification model; fp32 uses it as is, bf16 a converted copy,
            so ``model`` stays fp32 for anything else that needs it (heatmaps).
        precision: "fp32" or "bf16".
        device: Where the model runs.
    """

    name = "torch"

    def __init__(self, model, *, precision: str = "fp32", device: str = "cpu") -> None:
        import copy

        import torch

        self.precision = precision
        self.device = device
        self._dtype = torch.float32
        if precision == "fp32":
            self._module = model.to(device)
        elif precision == "bf16":
            cpu = detect_cpu_features()
            if device == "cpu" and not cpu.native_bf16:
                warnings.warn(
                    f"precision='bf16' on a CPU without AMX or AVX512-BF16 ({cpu.describe()}): PyTorch "
                    "emulates bf16 matrix multiplies here, far slower than fp32",
                    RuntimeWarning,
                    stacklevel=2,
                )
            self._dtype = torch.bfloat16
            self._module = copy.deepcopy(model).to(device=device, dtype=torch.bfloat16).eval()
        else:
            raise EngineError(f"the torch engine runs fp32 or bf16, not {precision!r}")

    def compute_outputs(self, pixel_values: np.ndarray) -> ModelOutputs:
        import torch

        with torch.inference_mode():
            inputs = torch.from_numpy(pixel_values).to(self.device, self._dtype)  # (B, 3, H, W)
            outputs = self._module(pixel_values=inputs)
        domain_logits = getattr(outputs, "domain_logits", None)  # (B, domains), models with domains
        return ModelOutputs(
            outputs.logits.float().cpu().numpy(),  # (B, C)
            None if domain_logits is None else domain_logits.float().cpu().numpy(),
        )

    def compute_logits(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.compute_outputs(pixel_values).logits


@dataclass(frozen=True)
class ExactRecheck:
    """How an int8 export keeps the exact answers: the rows whose int8 outputs lie near a decision are
    scored again by the export's fp32 graph, so only images the int8 error could move across a
    threshold pay for fp32. Each image (a video's frames included) is held against its image rule; a
    video clip's verdict, decided on the mean of its frames' scores, is not re-checked as a whole.

    Attributes:
        path: The fp32 ONNX file (`EXACT_ONNX_FILE`).
        select: Outputs (B rows) -> (B,) bool, the rows to score again: `scoring.find_near_decisions`
            at the detector's thresholds (the caller's, where given) and the export's margin.
    """

    path: Path
    select: Callable[[ModelOutputs], np.ndarray]


class OnnxEngine:
    """An ONNX export run by ONNX Runtime on the CPU.

    Args:
        path: The ``.onnx`` file.
        precision: What the file holds ("fp32" or "int8"); only reported.
        threads: Intra-op threads; default: ONNX Runtime's (one per physical core).
        recheck: For an int8 export that holds its fp32 graph: which rows that graph scores again;
            it is loaded on the first such row.

    Attributes:
        rows_scored: Rows scored so far.
        rows_rechecked: Of those, rows scored again in fp32.
    """

    name = "onnx"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        precision: str,
        threads: int | None = None,
        recheck: ExactRecheck | None = None,
    ) -> None:
        self.precision = precision
        self.rows_scored = 0
        self.rows_rechecked = 0
        self._threads = threads
        self._recheck = recheck
        self._exact: OnnxEngine | None = None
        self._session = self._load_session(path)
        self._input = self._session.get_inputs()[0].name
        self._outputs = [output.name for output in self._session.get_outputs()]  # logits[, domain_logits]

    def _load_session(self, path: str | os.PathLike):
        ort = require("onnxruntime", "onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self._threads:
            options.intra_op_num_threads = self._threads  # else ONNX Runtime's: one per physical core
        try:
            return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped errors for bad files
            raise EngineError(f"cannot load the ONNX model {os.fspath(path)!r}: {error}") from error

    def compute_outputs(self, pixel_values: np.ndarray) -> ModelOutputs:
        outputs = self._run(pixel_values)
        self.rows_scored += len(pixel_values)
        if self._recheck is None:
            return outputs
        rows = self._recheck.select(outputs)  # (B,) bool
        if not rows.any():
            return outputs
        if self._exact is None:
            self._exact = OnnxEngine(self._recheck.path, precision="fp32", threads=self._threads)
        self.rows_rechecked += int(rows.sum())
        return outputs.replace_rows(rows, self._exact.compute_outputs(pixel_values[rows]))

    def _run(self, pixel_values: np.ndarray) -> ModelOutputs:
        try:
            results = self._session.run(None, {self._input: np.ascontiguousarray(pixel_values, np.float32)})
        except Exception as error:  # onnxruntime's errors are not RuntimeError subclasses
            raise EngineError(f"ONNX Runtime failed: {error}") from error
        named = dict(zip(self._outputs, results, strict=True))
        domain_logits = named.get("domain_logits")
        return ModelOutputs(
            np.asarray(named["logits"], dtype=np.float32),  # (B, C)
            None if domain_logits is None else np.asarray(domain_logits, dtype=np.float32),  # (B, domains)
        )

    def compute_logits(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.compute_outputs(pixel_values).logits


def load_export_info(folder: str | os.PathLike) -> dict | None:
    """The ``export.json`` of the ONNX export in ``folder``, or None when the folder holds no export.

    Raises:
        EngineError: There is an ONNX file but no readable ``export.json`` with a known precision.
    """
    import json

    folder = Path(folder)
    if not (folder / ONNX_FILE).is_file():
        return None
    try:
        info = json.loads((folder / EXPORT_INFO_FILE).read_text(encoding="utf-8"))
        precision = info["precision"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EngineError(
            f"{folder}: has {ONNX_FILE} but no readable {EXPORT_INFO_FILE} ({error}); write the folder "
            "with `deepfake-detector export --format onnx`"
        ) from None
    if precision not in ("fp32", "int8"):
        raise EngineError(
            f"{folder / EXPORT_INFO_FILE}: unknown precision {precision!r}; expected fp32 or int8"
        )
    return info


def build_engine(
    choice: EngineChoice,
    *,
    model=None,
    folder: Path | None = None,
    device: str = "cpu",
    export_info: dict | None = None,
    find_near_decisions: Callable[..., np.ndarray] | None = None,
):
    """The engine ``choice`` names, for a PyTorch ``model`` or the ONNX export in ``folder``.

    Args:
        choice: From `resolve_engine`.
        model: The PyTorch model (engine "torch").
        folder: The export folder (engine "onnx").
        device: Where a PyTorch model runs.
        export_info: The folder's ``export.json``: an int8 export that records a
            ``recheck_margin_logits`` scores the rows near a decision again in fp32 (`ExactRecheck`).
        find_near_decisions: ``(outputs, margin_logits=...)`` -> (B,) bool, the rows near a decision
            at the detector's thresholds (`scoring.find_near_decisions`); needed for such an export.

    Raises:
        EngineError: The export asks for a re-check but its fp32 graph is missing.
    """
    if choice.engine == "torch":
        return TorchEngine(model, precision=choice.precision, device=device)
    folder = Path(folder)
    margin = recheck_margin_logits(export_info)
    recheck = None
    if margin is not None and find_near_decisions is not None:
        if not (folder / EXACT_ONNX_FILE).is_file():
            raise EngineError(
                f"{folder}: {EXPORT_INFO_FILE} scores rows near a decision again with {EXACT_ONNX_FILE}, "
                "which is missing; export the folder again"
            )
        recheck = ExactRecheck(
            folder / EXACT_ONNX_FILE, lambda outputs: find_near_decisions(outputs, margin_logits=margin)
        )
    return OnnxEngine(folder / ONNX_FILE, precision=choice.precision, recheck=recheck)


def recheck_margin_logits(export_info: dict | None) -> float | None:
    """How close to a decision (in logits) an export's rows are scored again in fp32 (`ExactRecheck`);
    None for a folder without a re-check (fp32 and dynamic int8 exports, and int8-static exports
    written before it existed)."""
    return ((export_info or {}).get("quantization") or {}).get("recheck_margin_logits")


# Threads that decode and preprocess ahead of the model (the detector's, the server's); more than 4 only
# adds contention with the model's own threads.
MAX_DEFAULT_WORKERS = 4


def default_workers(cap: int = MAX_DEFAULT_WORKERS) -> int:
    """Helper threads by default: one per CPU this process may use, at most ``cap``; the one CPU-count
    policy the detector, the server and the scan report follow."""
    return min(available_cpus(), cap)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
