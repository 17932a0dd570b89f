"""The batch trigger's blob by reference: the worker hands the function the blob's container and
name, not its bytes.

A trigger parameter annotated with an ``SdkType`` is how the Python worker asks for that
("deferred binding"): when it indexes the app it marks the binding ``SupportsDeferredBinding``,
and the host then sends a ``ModelBindingData`` naming the blob instead of reading the whole
file into the worker. mlfn reads the file itself, in ranges, so a file larger than the
instance's memory can be scored. The blob extension package
(``azurefunctions-extensions-bindings-blob``) asks the same way, but its types are the storage
SDK's clients: the SDK would be imported while the app is indexed, on every cold start.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azurefunctions.extensions.base import InConverter, SdkType, get_binding_registry

from runtime.errors import DiscoveryError


@dataclass(frozen=True)
class BlobReference(SdkType):  # type: ignore[misc]  # the base package has no type hints
    """The blob that fired the trigger: its container and name. Nothing of its version: a
    worker may hand over a reference it decoded for an earlier event of the same name."""

    container: str
    name: str


_taken = get_binding_registry().get("blob")
if _taken is not None:
    raise DiscoveryError(
        f"{_taken.__module__} already decodes blob bindings by reference; mlfn's batch trigger "
        "needs that converter for itself: remove azurefunctions-extensions-bindings-blob, or "
        "turn batch files off for every endpoint (Batch(enabled=False))"
    )


class BlobReferenceConverter(  # type: ignore[call-arg]  # the metaclass takes the binding
    InConverter,  # type: ignore[misc]  # the base package has no type hints
    binding="blob",
    trigger="blobTrigger",
):
    """Decodes the host's ModelBindingData into a ``BlobReference``; what the worker calls for
    a ``BlobReference`` parameter."""

    @classmethod
    def check_input_type_annotation(cls, pytype: type) -> bool:
        return isinstance(pytype, type) and issubclass(pytype, BlobReference)

    @classmethod
    def decode(
        cls, data: Any, *, trigger_metadata: Mapping[str, Any] | None, pytype: type | None = None
    ) -> BlobReference | None:
        if data is None or data.type is None:
            return None
        if data.type != "model_binding_data":
            raise ValueError(
                f"the blob binding sent {data.type!r}, not a reference: SDK-type bindings need "
                "Functions runtime 4.34.1 or later"
            )
        content = json.loads(data.value.content)
        return BlobReference(str(content["ContainerName"]), str(content["BlobName"]))

    @classmethod
    def has_implicit_output(cls) -> bool:
        return False
