"""A reference to an endpoint's model: where its bytes live and, optionally, which bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass

SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Model:
    """Where an endpoint's ONNX file lives.

    uri: a path (relative ones resolve against ``MLFN_MODEL_STORE``; ``./x`` is a file in the
        app folder), ``file://...``, ``az://CONTAINER/PATH``, ``s3://BUCKET/KEY`` or a blob URL.
    sha256: pin the exact bytes; a download with another digest is refused.
    version: reported to clients; defaults to the first 12 hex digits of the file's sha256.
    providers: onnxruntime execution providers for this model, in order of preference (e.g.
        ``("CUDAExecutionProvider", "CPUExecutionProvider")``); default: ``MLFN_ORT_PROVIDERS``.
    threads: onnxruntime threads one run of this model may use; default:
        ``MLFN_ORT_INTRA_OP_THREADS``. A release's shadow runs with one, so its runs never
        contend with the live version's thread pool.
    """

    uri: str
    sha256: str | None = None
    version: str | None = None
    providers: tuple[str, ...] | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if not self.uri.strip():
            raise ValueError("Model uri must not be empty")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"Model threads must be 1 or more, got {self.threads}")
        if self.sha256 is not None and not SHA256.fullmatch(self.sha256):
            raise ValueError(f"Model sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
