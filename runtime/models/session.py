"""Creating an onnxruntime session: threads sized to the instance, the graph optimisation
level, the execution provider, and the optimised graph kept on disk so that later cold starts
skip the optimisation."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.config import Settings
from runtime.errors import ModelLoadFailed

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger("mlfn.models")

OPTIMIZATION_LEVELS = ("disabled", "basic", "extended", "all")
AUTO = "auto"


@dataclass(frozen=True)
class SessionConfig:
    """How sessions are made. ``providers`` None: CUDA when onnxruntime-gpu sees a device,
    the CPU otherwise. ``optimized_dir`` None: optimised graphs are not kept."""

    intra_op_threads: int | None = None  # None: every CPU this process may use
    inter_op_threads: int = 1
    optimization: str = "all"
    providers: tuple[str, ...] | None = None
    optimized_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionConfig:
        providers = settings.ort_providers
        return cls(
            intra_op_threads=settings.ort_intra_op_threads,
            inter_op_threads=settings.ort_inter_op_threads,
            optimization=settings.ort_optimization,
            providers=None if providers in ((), (AUTO,)) else providers,
            optimized_dir=settings.cache_dir / "optimized" if settings.ort_keep_optimized else None,
        )


@dataclass(frozen=True)
class SessionInfo:
    """What a session was made with: the provider that runs it, and what the optimised-graph
    cache did (``hit``: loaded pre-optimised, ``saved``: optimised now and kept, ``off``)."""

    provider: str
    optimized: str
    intra_op_threads: int


def create(name: str, path: Path, sha256: str, config: SessionConfig) -> tuple[Any, SessionInfo]:
    """An ``InferenceSession`` for the model file at ``path`` (content ``sha256``)."""
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - a dependency of the runtime
        raise ImportError("mlfn needs onnxruntime: pip install onnxruntime") from exc
    providers = list(config.providers or _auto_providers(onnxruntime))
    threads = config.intra_op_threads or _cpus()
    kept = _kept_path(config, sha256, providers, onnxruntime.__version__)
    if kept is not None and kept.is_file():
        try:
            options = _options(onnxruntime, config, threads, "disabled")  # done already
            session = onnxruntime.InferenceSession(str(kept), options, providers=providers)
            return session, SessionInfo(session.get_providers()[0], "hit", threads)
        except Exception as exc:  # a damaged or foreign file: make it again from the model
            log.warning("optimised graph of %s is unusable (%s); rebuilding it", name, exc)
            kept.unlink(missing_ok=True)
    if kept is not None:
        try:
            session = _create_saving(onnxruntime, path, config, threads, providers, kept)
            return session, SessionInfo(session.get_providers()[0], "saved", threads)
        except Exception as exc:  # a full disk, a graph too large to save, a provider that
            # compiles nodes: the optimised graph is a shortcut, so serve without keeping it
            log.warning("cannot keep the optimised graph of %s (%s); not keeping it", name, exc)
    options = _options(onnxruntime, config, threads, config.optimization)
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises several unrelated exception types
        raise ModelLoadFailed(name, str(exc).strip().splitlines()[0]) from exc
    return session, SessionInfo(session.get_providers()[0], "off", threads)


def _create_saving(
    onnxruntime: Any,
    path: Path,
    config: SessionConfig,
    threads: int,
    providers: list[str],
    kept: Path,
) -> Any:
    """A session that also writes its optimised graph to ``kept``, whole or not at all."""
    kept.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch_name = tempfile.mkstemp(dir=kept.parent, prefix=".saving-", suffix=".onnx")
    os.close(fd)
    scratch = Path(scratch_name)
    try:
        options = _options(onnxruntime, config, threads, config.optimization)
        options.optimized_model_filepath = str(scratch)
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        if scratch.stat().st_size == 0:
            raise OSError("onnxruntime wrote no optimised graph")
        os.replace(scratch, kept)
        return session
    finally:
        scratch.unlink(missing_ok=True)


def _options(
    onnxruntime: Any, config: SessionConfig, threads: int, level: str
) -> onnxruntime.SessionOptions:
    levels = onnxruntime.GraphOptimizationLevel
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = config.inter_op_threads
    options.graph_optimization_level = {
        "disabled": levels.ORT_DISABLE_ALL,
        "basic": levels.ORT_ENABLE_BASIC,
        "extended": levels.ORT_ENABLE_EXTENDED,
        "all": levels.ORT_ENABLE_ALL,
    }[level]
    return options


def _auto_providers(onnxruntime: Any) -> list[str]:
    # onnxruntime-gpu lists CUDA whenever it is installed; a session made without a device
    # falls back to the CPU and says so, and the provider actually used is what we report.
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _kept_path(
    config: SessionConfig, sha256: str, providers: list[str], version: str
) -> Path | None:
    """Where the optimised graph of these bytes is kept: keyed by everything it depends on
    (the model's digest, onnxruntime's version, the level, the providers, the machine)."""
    if config.optimized_dir is None or config.optimization == "disabled":
        return None
    provider = providers[0].removesuffix("ExecutionProvider").lower()
    machine = f"{platform.machine()}-{_cpu_features()}"
    key = f"{sha256}-ort{version}-{config.optimization}-{provider}-{machine}.onnx"
    return config.optimized_dir / key


@functools.cache
def _cpu_features() -> str:
    """A short digest of the CPU's feature flags: an optimised graph may use AVX-512 kernels
    that another x86_64 machine sharing the cache lacks."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "any"
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return hashlib.sha256(flags.encode()).hexdigest()[:8]


def _cpus() -> int:
    with contextlib.suppress(AttributeError):  # not on every platform
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
