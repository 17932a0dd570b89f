"""One error hierarchy for the runtime; only the trigger adapters turn it into responses."""

from __future__ import annotations

from typing import Any, ClassVar


class MlfnError(Exception):
    """Base error: carries the HTTP status it maps to and whether a retry can help.

    ``detail`` is structured data for the client (e.g. failing field paths); ``message`` is
    one readable sentence.
    """

    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, detail: Any = None) -> None:
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


class ModelLoadTimeout(StoreUnavailable):
    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(
            f"model {name!r} is still loading after {seconds:g}s", detail={"model": name}
        )


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


class PredictContractError(MlfnError):
    """The endpoint's predict function broke its contract (wrong count or type of outputs)."""

    status = 500


class ConfigError(MlfnError):
    """A setting has a value the runtime cannot use; the message names the key."""

    status = 500

    def __init__(self, key: str, value: str, expected: str) -> None:
        super().__init__(f"setting {key}={value!r} is invalid: expected {expected}")
        self.key = key
