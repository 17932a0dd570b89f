"""OpenAPI 3.1 for an app: every predict route with request and response schemas from the
endpoint's pydantic models, the error bodies, the Open Inference Protocol routes, and the
function-key security schemes.

A document of the declarations (``runtime.endpoint``), so a room above them: the codecs of
``runtime.protocol`` sit below the declarations, which take their naming rules from them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from runtime import redact
from runtime.element_types import V2_DATATYPES
from runtime.endpoint import BoundEndpoint

REF = "#/components/schemas/{model}"

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string", "examples": ["ValidationFailed"]},
                "message": {"type": "string"},
                "detail": {
                    "description": "Structured detail; for 422, one entry per failing field."
                },
            },
        }
    },
}
V2_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
MODEL_INFO = {
    "type": "object",
    "required": ["name", "version", "sha256"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "sha256": {"type": "string"},
    },
}
V2_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {
            "type": "string",
            "enum": list(V2_DATATYPES),
        },
        "data": {"description": "Row-major, flat or nested."},
        "parameters": {"type": "object"},
    },
}
V2_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
        "parameters": {"type": "object"},
    },
}
V2_INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}},
    },
}
KEYS: list[dict[str, list[str]]] = [{"functionKey": []}, {"functionCode": []}]


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(statuses: Mapping[int, str], schema: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, why in statuses.items():
        out[str(status)] = {"description": why, **_json({"$ref": f"#/components/schemas/{schema}"})}
    out["503"]["headers"] = {
        "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}
    }
    return out


def build_openapi(
    endpoints: Mapping[str, BoundEndpoint], route_prefix: str, version: str
) -> dict[str, Any]:
    base = f"/{route_prefix.strip('/')}" if route_prefix.strip("/") else ""
    served = [b for b in endpoints.values() if b.endpoint.predict_fn is not None]
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for bound in served:
        models += [(bound.endpoint.input, "validation"), (bound.endpoint.output, "serialization")]
    keys, defs = models_json_schema(models, ref_template=REF, by_alias=True)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas.update({"Error": ERROR, "V2Error": V2_ERROR, "ModelInfo": MODEL_INFO})
    schemas.update(
        {
            "V2Tensor": V2_TENSOR,
            "V2InferRequest": V2_INFER_REQUEST,
            "V2InferResponse": V2_INFER_RESPONSE,
        }
    )
    paths: dict[str, Any] = {}
    for bound in served:
        name, ep = bound.name, bound.endpoint
        input_ref = keys[(ep.input, "validation")]
        output_ref = keys[(ep.output, "serialization")]
        paths[f"{base}/{name}/predict"] = {
            "post": {
                "operationId": f"{name}_predict",
                "summary": f"Predict with endpoint {name}",
                "description": (
                    f"Scores instances with {redact.url(ep.model.uri)}; "
                    f"at most {ep.limits.max_request_bytes} bytes per request."
                ),
                "tags": [name],
                "security": KEYS,
                "requestBody": {
                    "required": True,
                    **_json(
                        {
                            "type": "object",
                            "required": ["instances"],
                            "properties": {
                                "instances": {"type": "array", "minItems": 1, "items": input_ref}
                            },
                        }
                    ),
                },
                "responses": {
                    "200": {
                        "description": "One prediction per instance, in order.",
                        **_json(
                            {
                                "type": "object",
                                "required": ["predictions", "model"],
                                "properties": {
                                    "predictions": {"type": "array", "items": output_ref},
                                    "model": {"$ref": "#/components/schemas/ModelInfo"},
                                },
                            }
                        ),
                    },
                    **_errors(
                        {
                            400: "Malformed body.",
                            413: "Body over the endpoint's limit.",
                            422: "Instances failed validation.",
                            503: "Model store unavailable.",
                            500: "Server fault.",
                        },
                        "Error",
                    ),
                    "401": {"description": "Missing or wrong function key."},
                },
            }
        }
    v2_errors = _errors(
        {400: "Bad tensors.", 404: "Unknown model or version.", 503: "Model store unavailable."},
        "V2Error",
    )
    model_param = {
        "name": "model_name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": sorted(endpoints)},
    }
    v2_reads = (  # route, operation id, summary, what 200 means, takes a model name, key
        ("v2", "v2_server_metadata", "Server metadata", "Name, version, extensions.", False,
         False),
        ("v2/health/live", "v2_live", "Liveness", "Live.", False, False),
        ("v2/health/ready", "v2_ready", "Readiness", "Ready.", False, False),
        ("v2/models/{model_name}", "v2_model_metadata",
         "Model metadata: tensors, datatypes, shapes (-1 dynamic); loads the model", "Metadata.",
         True, True),
        ("v2/models/{model_name}/ready", "v2_model_ready",
         "Model readiness (does not load the model)", "Ready.", True, False),
    )  # fmt: skip
    for route, operation_id, summary, ok, per_model, keyed in v2_reads:
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["v2"],
            "responses": {"200": {"description": ok}},
        }
        if per_model:
            operation["parameters"] = [model_param]
            operation["responses"].update(v2_errors)
        if keyed:
            operation["security"] = KEYS
            operation["responses"]["401"] = {"description": "Missing or wrong function key."}
        paths[f"{base}/{route}"] = {"get": operation}
    paths[f"{base}/v2/models/{{model_name}}/infer"] = {
        "post": {
            "operationId": "v2_model_infer",
            "summary": "Inference on tensors (JSON, or binary: Inference-Header-Content-Length)",
            "tags": ["v2"],
            "security": KEYS,
            "parameters": [model_param],
            "requestBody": {
                "required": True,
                **_json({"$ref": "#/components/schemas/V2InferRequest"}),
            },
            "responses": {
                "200": {
                    "description": "Output tensors.",
                    **_json({"$ref": "#/components/schemas/V2InferResponse"}),
                },
                **v2_errors,
                "401": {"description": "Missing or wrong function key."},
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mlfn endpoints",
            "version": version,
            "description": "ML endpoints served by mlfn on Azure Functions.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionCode": {"type": "apiKey", "in": "query", "name": "code"},
            },
        },
    }
