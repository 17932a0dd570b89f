"""Deferred (SDK-type) bindings as the worker decodes them. A trigger parameter annotated with a
type that the ``azurefunctions.extensions.base`` registry supports gets the registered
converter's decoding of a ``ModelBindingData`` reference instead of the data: the host sends
the reference, and the function reads the data itself. mlfn's batch trigger takes its blob
this way, and so does a plain app using the blob extension package's clients."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BLOB_SOURCE = "AzureStorageBlobs"  # the source the host names in a blob's ModelBindingData


@dataclass(frozen=True)
class ModelBindingData:
    """The host's reference to a binding's data, with the RPC message's fields."""

    content: str
    source: str
    version: str = "1.0"
    content_type: str = "application/json"


def registry_for(annotation: Any) -> Any | None:
    """The converter registry that decodes a parameter of this type by reference, or None when
    the worker would bind it as data."""
    base = sys.modules.get("azurefunctions.extensions.base")
    if base is None:
        return None  # as the worker: an app that never imported the base package uses none
    registry = base.get_binding_registry()
    return registry if registry.check_supported_type(annotation) else None


def blob_content(connection: str, container: str, name: str) -> str:
    """The ``content`` of the ModelBindingData the host sends for a blob."""
    return json.dumps({"Connection": connection, "ContainerName": container, "BlobName": name})


def decode_blob(
    registry: Any,
    annotation: Any,
    binding_type: str,
    connection: str,
    container: str,
    name: str,
    metadata: Mapping[str, tuple[str, str]],
) -> Any:
    """What the worker passes a blob parameter of type ``annotation`` that the host bound by
    reference. ``metadata``: the trigger metadata, name to (value, TypedData kind)."""
    from azurefunctions.extensions.base import Datum

    reference = ModelBindingData(blob_content(connection, container, name), BLOB_SOURCE)
    trigger_metadata = {k: Datum(value, kind) for k, (value, kind) in metadata.items()}
    return registry.get(binding_type).decode(
        Datum(reference, "model_binding_data"), trigger_metadata=trigger_metadata, pytype=annotation
    )
