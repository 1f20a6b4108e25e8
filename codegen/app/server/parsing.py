"""Reading a request: its JSON body (size-limited), the model it validates
against, and the OpenAI-style error that leaves when either fails."""
from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from codegen.app.server.schemas import ParamError


class ApiError(Exception):
    """An error that leaves as an OpenAI-style body with ``status``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


# ---- request parsing -----------------------------------------------------


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body; 413 above ``limit`` bytes (checked while reading), 400 if not JSON."""
    declared = request.headers.get("content-length")
    too_big = ApiError(413, f"request body is larger than the server's limit of {limit} bytes; send a smaller body "
                            "or start the server with a larger --max-body-kb", code="body_too_large")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # a lying or missing Content-Length must not let a huge body in
            raise too_big
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON ({e}); send a JSON object", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}", code="invalid_json")
    return body


def parse(model: type[BaseModel], body: dict) -> Any:
    """Validate ``body``; the first problem becomes a 400 naming its field."""
    try:
        return model.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ParamError):
            return_param, message = cause.param, str(cause)
        else:
            return_param = ".".join(str(p) for p in err["loc"]) or None
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = f"unrecognized request argument: {return_param}; remove it (itercode's extensions are n_candidates, best_of and tests)"
            elif err["type"] == "missing":
                message = f"missing required argument: {return_param}"
            elif return_param:
                message = f"{return_param}: {message}"
        raise ApiError(400, message, param=return_param, code="invalid_value") from None
