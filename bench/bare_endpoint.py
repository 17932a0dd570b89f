"""The comparison point for the host: the least any HTTP endpoint can do for the same model.

A raw ASGI app under uvicorn, the same server ``mlfn serve`` uses: read the body, orjson to a
numpy array, ``session.run`` on the event loop, orjson back. No validation, no batching, no
routing. Run with ``MLFN_BENCH_MODEL=path.onnx uvicorn bench.bare_endpoint:app``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

_session = ort.InferenceSession(os.environ["MLFN_BENCH_MODEL"], providers=["CPUExecutionProvider"])
_input = _session.get_inputs()[0].name
_output = _session.get_outputs()[0].name


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    doc = orjson.loads(b"".join(chunks))
    x = np.array([row["x"] for row in doc["instances"]], dtype=np.float32)
    (y,) = _session.run([_output], {_input: x})
    body = orjson.dumps({"predictions": [{"y": row} for row in y.tolist()]})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
