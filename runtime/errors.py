"""Every error the runtime raises on purpose, in one place.

``MlfnError`` subclasses carry the HTTP status they map to and whether a retry can help; only
the trigger adapters turn them into responses or error results. ``HostError`` subclasses are
problems with the app folder itself (host.json, local settings, an endpoint that cannot be
declared, an app that cannot be indexed): no request is involved, so they carry no status; the
local host and the CLI tell them as one line, and on Azure they fail indexing. The signals at
the end pass between rooms and are turned into one of those (or a decision) by the code that
catches them; none reaches a client as it is.

A module may keep a private exception class (``_Name``) that it raises and catches itself;
every public one is here (tests/test_architecture.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

from runtime import redact


class MlfnError(Exception):
    """Base error: carries the HTTP status it maps to and whether a retry can help.

    ``detail`` is structured data for the client (e.g. failing field paths); ``message`` is
    one readable sentence.
    """

    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, detail: Any = None) -> None:
        # Messages and details reach clients and logs: no credential may ride along.
        message = redact.text(message)
        if isinstance(detail, dict):
            detail = {k: redact.text(v) if isinstance(v, str) else v for k, v in detail.items()}
        super().__init__(message)
        self.message = message
        self.detail = detail

    @property
    def type(self) -> str:
        return type(self).__name__

    def headers(self) -> dict[str, str]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return body


# --- the client's fault (4xx) -----------------------------------------------------------------


class BadRequest(MlfnError):
    """The body cannot be read as a request at all (not JSON, wrong top-level shape)."""

    status = 400


class PayloadTooLarge(MlfnError):
    status = 413

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"request body is {size} bytes, over this endpoint's limit of {limit} bytes",
            detail={"size": size, "limit": limit},
        )


class ValidationFailed(MlfnError):
    """Instances that do not match the endpoint's input schema; detail lists each field."""

    status = 422


class EndpointNotFound(MlfnError):
    status = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"no endpoint named {name!r}", detail={"name": name})


class ModelVersionNotFound(MlfnError):
    """A versioned Open Inference Protocol route named a version the endpoint does not serve."""

    status = 404

    def __init__(self, name: str, version: str, serving: str | list[str]) -> None:
        served = [serving] if isinstance(serving, str) else serving
        listed = ", ".join(f"'{v}'" for v in served)
        super().__init__(
            f"model '{name}' has no version '{version}'; it serves version"
            f"{'s' if len(served) > 1 else ''} {listed}",
            detail={"name": name, "version": version},
        )


class ModelInputRefused(BadRequest):
    """The model cannot run on what was sent: arrays that cannot be built (ragged rows), or
    onnxruntime refusing their shapes or types. The request's fault, not the server's."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model {model!r} cannot run on these inputs: {reason:.500}")


class ColumnsRefused(BadRequest):
    """A DataFrame cannot be scored by an endpoint: its columns miss input fields, or clash
    with the columns scoring adds (Spark scoring)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"endpoint {name!r} cannot score this DataFrame: {reason}")


class ReleaseInvalid(MlfnError):
    """A release document that cannot be followed, and its field at fault: ``mlfn release``
    refuses to write it, and an instance that reads it keeps its last good release."""

    status = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", detail=[{"field": field, "message": message}])
        self.field = field


class InputBlobMissing(MlfnError):
    """A queue message names an inputs blob that does not exist: retrying cannot help."""

    status = 404

    def __init__(self, ref: str) -> None:
        super().__init__(f"inputs blob {ref} does not exist", detail={"instances_blob": ref})


class UnknownFormat(MlfnError):
    """A batch file whose extension names no format mlfn reads."""

    status = 400


class FileUnreadable(MlfnError):
    """A batch file that cannot be read as its format at all: nothing in it can be scored."""

    status = 400


class UnsupportedEncoding(MlfnError):
    """A blob stored with a ``Content-Encoding`` that cannot be read here: it never will be."""

    status = 415

    def __init__(self, what: str, encoding: str, why: str) -> None:
        super().__init__(
            f"{what} is stored with Content-Encoding {encoding!r}, {why}; upload it "
            "without a Content-Encoding",
            detail={"content_encoding": encoding},
        )


class InflatedTooLarge(PayloadTooLarge):
    """A compressed blob inflates past the limit: told as soon as the limit is passed, with
    the stored size beside it (the inflated size is never learnt)."""

    def __init__(self, stored: int, limit: int, encoding: str) -> None:
        MlfnError.__init__(
            self,
            f"the blob of {stored} bytes (Content-Encoding {encoding!r}) inflates to more than "
            f"this endpoint's limit of {limit} bytes",
            detail={"size": stored, "limit": limit, "content_encoding": encoding},
        )

    @property
    def type(self) -> str:
        return PayloadTooLarge.__name__


# --- the store's fault: retry later (503) ------------------------------------------------------


class StoreUnavailable(MlfnError):
    """The model store could not be reached or did not answer in time: retry later."""

    status = 503
    retryable = True
    retry_after_s: ClassVar[int] = 5

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ModelNotInStore(StoreUnavailable):
    """The store answered, but the model object is not there (yet): a deployment problem
    that an upload fixes without a restart, so it is retryable like an unreachable store."""

    def __init__(self, uri: str) -> None:
        super().__init__(f"model {uri} does not exist in its store", detail={"uri": uri})


class StoreConflict(MlfnError):
    """A conditional write lost: the object changed (or came to exist) since it was read. Read
    it again and decide again; writing over it would undo someone else's change."""

    status = 409

    def __init__(self, uri: str, expected: str | None) -> None:
        what = f"changed since it was read (ETag {expected})" if expected else "exists already"
        super().__init__(f"{uri} {what}; read it again and retry", detail={"uri": uri})


class Overloaded(MlfnError):
    """An endpoint has as many requests waiting as it may queue: come back in a moment."""

    status = 503
    retryable = True

    def __init__(self, waiting: int) -> None:
        super().__init__(
            f"the endpoint is at capacity ({waiting} requests waiting); retry shortly",
            detail={"waiting": waiting},
        )

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class DeadlineExceeded(MlfnError):
    """A request's deadline (its own, ``x-mlfn-timeout-ms``, or its endpoint's) passed before
    it could be answered: it is answered now, and whatever of it had not started never will."""

    status = 504
    retryable = True

    def __init__(self, budget_ms: float, run_ms: float | None = None) -> None:
        if run_ms is None:
            super().__init__(
                f"no answer within the request's deadline of {budget_ms:g} ms; retry shortly",
                detail={"timeout_ms": budget_ms},
            )
            return
        # The whole budget is shorter than a run: a retry soon would meet the same.
        super().__init__(
            f"no answer within the request's deadline of {budget_ms:g} ms: the endpoint's "
            f"last run took {run_ms:.1f} ms, longer than the whole deadline, which a retry "
            "needs raised",
            detail={"timeout_ms": budget_ms, "last_run_ms": round(run_ms, 1)},
        )

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}

    def given_runs_of(self, run_s: float) -> DeadlineExceeded:
        """This 504, saying so when the endpoint's last run (``run_s``) took longer than the
        whole deadline: retrying soon would meet the same."""
        budget_ms = self.detail["timeout_ms"]
        if "last_run_ms" in self.detail or run_s * 1000 <= budget_ms:
            return self
        return DeadlineExceeded(budget_ms, run_s * 1000)


class RunAbandoned(MlfnError):
    """Every request a run was for was answered before the run ended (its deadline passed,
    its caller left): the rest of the run (a large request's next chunks) is not started.
    Raised to the batcher, which has nobody left to tell."""

    status = 504
    retryable = True

    def __init__(self) -> None:
        super().__init__("every request this run was for was answered before it ended")


class Shed(Overloaded):
    """An endpoint with a latency target cannot answer this request within it (the requests
    ahead of it would take longer): refused at once rather than answered late."""

    def __init__(
        self, expected_ms: float, left_ms: float, target_ms: float, alone: bool = False
    ) -> None:
        # Alone: nothing was ahead of it, so a retry soon meets the same (``detail.alone``):
        # the deadline is shorter than the endpoint's runs of its size.
        cause = (
            "with nothing ahead of it, an answer would take about"
            if alone
            else "the endpoint is at capacity: an answer would take about"
        )
        advice = (
            "it needs a longer deadline, or fewer instances per request"
            if alone
            else "retry shortly"
        )
        detail = {
            "expected_ms": round(expected_ms, 1),
            "left_ms": round(left_ms, 1),
            "target_ms": target_ms,
        }
        MlfnError.__init__(
            self,
            f"{cause} {expected_ms:.1f} ms, more than the {left_ms:.1f} ms left of the "
            f"request's deadline (the endpoint's target is {target_ms:g} ms); {advice}",
            detail={**detail, "alone": True} if alone else detail,
        )


class CacheUnavailable(StoreUnavailable):
    """The model cache's own disk failed (full, read-only): the instance may recover (space
    freed, a restart elsewhere), so like a store outage it is a 503 to retry."""

    def __init__(self, root: Any, exc: OSError) -> None:
        super().__init__(
            f"the model cache at {root} cannot be used: {exc.strerror or exc}",
            detail={"cache": str(root)},
        )


class ModelLoadTimeout(StoreUnavailable):
    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(
            f"model {name!r} is still loading after {seconds:g}s", detail={"model": name}
        )


# --- the deployment's or mlfn's fault (500) ----------------------------------------------------


class IntegrityError(MlfnError):
    """Downloaded bytes do not match the pinned digest: they are never served."""

    status = 500

    def __init__(self, uri: str, expected: str, actual: str) -> None:
        super().__init__(
            f"model {uri} has sha256 {actual}, but the endpoint pins {expected}",
            detail={"uri": uri, "expected": expected, "actual": actual},
        )


class ModelLoadFailed(MlfnError):
    """onnxruntime refused the model file (corrupt, unsupported opset, ...)."""

    status = 500

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(
            f"onnxruntime cannot load model {name!r}: {reason}", detail={"model": name}
        )


class PredictFailed(MlfnError):
    """The endpoint's predict function raised: a server-side fault, never the client's."""

    status = 500

    def __init__(self, name: str, exc: BaseException) -> None:
        super().__init__(f"predict of endpoint {name!r} raised {type(exc).__name__}: {exc}")


class PredictContractError(MlfnError):
    """The endpoint's predict function broke its contract (wrong count or type of outputs)."""

    status = 500


class ConfigError(MlfnError):
    """A setting has a value the runtime cannot use; the message names the key."""

    status = 500

    def __init__(self, key: str, value: str, expected: str) -> None:
        if value:
            super().__init__(f"setting {key}={value!r} is invalid: expected {expected}")
        else:
            super().__init__(f"setting {key} is not set: expected {expected}")
        self.key = key


class PackageMissing(ConfigError):
    """A setting (``key``) asks for what an optional package does, and it is not installed."""

    def __init__(self, key: str, package: str, extra: str) -> None:
        MlfnError.__init__(
            self,
            f"{key} needs {package}, which is not installed: pip install "
            f"'mlfn[{extra}]' (on Azure, add {package} to requirements.txt)",
        )
        self.key = key


class ExtraMissing(MlfnError):
    """A feature needs an optional extra (``mlfn[extra]``) that is not installed."""

    def __init__(self, feature: str, package: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs {package}, which is not installed: pip install 'mlfn[{extra}]'"
        )
        self.package = package


class OutputNotRepresentable(MlfnError):
    """A row's prediction holds a value its Spark column cannot (an int over 64 bits, say):
    that row gets this error (Spark scoring), the rows beside it are written."""

    status = 500

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(
            f"output field {field!r} cannot be written as its Spark column: {reason:.300}",
            detail={"field": field},
        )


class SparkJobFailed(MlfnError):
    """A Spark job did not finish: a path that does not exist, a store no worker reached."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Spark job failed: {reason:.1000}")


class InternalError(MlfnError):
    """What a client is told about a bug: the traceback goes to the log, not the body."""

    status = 500

    def __init__(self) -> None:
        super().__init__("internal error; the server log has the details")


# --- the app folder: the local host, the CLI, indexing ------------------------------------------


class HostError(Exception):
    """The app folder cannot be indexed, served or used as it is; the message names the file
    and the fix."""


class HostConfigError(HostError):
    """host.json is missing or holds a value the host refuses."""


class LocalSettingsError(HostError):
    """local.settings.json is not what the Functions tools accept."""


class IndexingError(HostError):
    """The app cannot be indexed; on Azure no function of it would load."""


class DiscoveryError(HostError):
    """An endpoint folder that cannot be served."""


class NoSparkType(DiscoveryError):
    """An output field whose type no Spark column holds (Spark scoring): named with the fix."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}; Spark scoring cannot write this output field")


class ListenerError(HostError):
    """A queue trigger that cannot be listened to (missing connection setting, ...)."""


class ScaffoldError(HostError):
    """``mlfn new`` cannot render the endpoint asked for."""


class DeployError(HostError):
    """Deployment files (``mlfn kube``) cannot be generated for the app as it is."""


class ConversionError(HostError):
    """``mlfn convert`` cannot turn this model into ONNX (an unsupported type, no sample to run
    it on, the converter refused it); nothing is written."""


class ConverterMissing(ConversionError):
    """The converter for a framework is an optional extra that is not installed."""

    def __init__(self, framework: str, package: str, extra: str) -> None:
        super().__init__(
            f"converting a {framework} model needs {package}, which is not installed: "
            f"pip install 'mlfn[{extra}]'"
        )
        self.extra = extra


class ConversionMismatch(ConversionError):
    """The ONNX model answers the sample rows differently from the original, beyond the
    tolerance: it is not written."""


# --- signals between rooms: the code that catches one decides what it means ---------------------


class NotFound(Exception):
    """The storage service answered: no such container, blob or queue (runtime.storage maps
    the SDK's 404 to it; the caller tells what was missing, e.g. ``InputBlobMissing``)."""


class NotEncoded(ValueError):
    """A queue message body that is not in the expected encoding (host.json
    ``messageEncoding``)."""


class NotText(NotEncoded):
    """A queue message body that is not UTF-8, for a trigger that takes text (the local
    host fails the binding, as the Storage extension does)."""


class InputChanged(Exception):
    """A batch file's blob was overwritten while it was scored: its new version has its own
    event, so this one stops without results."""


class NotCompiled(Exception):
    """A model holds something the column checks cannot decide as pydantic does: its rows go
    the row path (runtime.columnar)."""


class FunctionTimedOut(Exception):
    """An invocation ran past host.json's functionTimeout: it fails, as on Azure (the local
    host)."""


class VersionChanged(Exception):
    """A blob read by version (runtime.storage.blob_files) was overwritten while it was read:
    the storage refused the next range rather than mix two versions."""


class CommitSuperseded(Exception):
    """Another writer committed the blob's block list first, dropping this writer's blocks:
    the blob is that writer's, whole (the storage's ``InvalidBlockList``)."""


class StorageRefused(Exception):
    """The storage refused a request for what it asks, not for a fault of its own (a name, a
    size, a header past Azure's limits): ``code`` is its error code; no retry can pass."""

    def __init__(self, code: str) -> None:
        super().__init__(f"the storage refused the request for good: {code}")
        self.code = code
