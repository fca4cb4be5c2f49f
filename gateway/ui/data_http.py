"""What the page's data endpoints share: one error type with its HTTP status, request bodies checked by
pydantic, and every failure answered as `{"error": "..."}` with a precise message (never a traceback)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simgate.gateway.cache.errors import STORE_ERRORS, describe_store_error
from simgate.gateway.cache.listing import KeyLookupError
from simgate.gateway.errors import GatewayError
from simgate.jsontext import loads

logger = logging.getLogger("simgate.ui")

MAX_BODY = 2 * 1024 * 1024  # a request body of the data API (lists of keys, run settings)

Model = TypeVar("Model", bound=BaseModel)
Endpoint = Callable[[Request], Awaitable[Response]]


class ApiError(GatewayError):
    """A request the data API refuses; `status` is the HTTP status it is answered with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def answers_errors(endpoint: Endpoint) -> Endpoint:
    """The endpoint with every expected failure turned into a JSON error of the right status."""

    @wraps(endpoint)
    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ApiError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except KeyLookupError as exc:
            return JSONResponse({"error": exc.message}, status_code=404)
        except STORE_ERRORS as exc:
            logger.warning("a page request could not read from disk", extra={"error": describe_store_error(exc)})
            return JSONResponse({"error": describe_store_error(exc)}, status_code=503)

    return run


async def read_body(request: Request, model: type[Model]) -> Model:
    """The request's JSON body as `model`; `ApiError` (400) naming the first problem."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise ApiError(f"the request body is over {MAX_BODY} bytes", 413)
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ApiError(f"invalid request: {where + ': ' if where else ''}{error['msg']}", 400) from None


def query_int(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(f"{name} must be an integer, got {raw[:40]!r}", 400) from None
    if not low <= value <= high:
        raise ApiError(f"{name} must be between {low} and {high}, got {value}", 400)
    return value


def read_json_file(path: Path, limit: int) -> Any:
    """A JSON file of at most `limit` bytes; `ApiError` if it is larger or not JSON."""
    size = path.stat().st_size
    if size > limit:
        raise ApiError(f"{path.name} is {size} bytes, over the {limit} the page opens", 413)
    try:
        return loads(path.read_bytes(), finite=True)
    except json.JSONDecodeError as exc:
        raise ApiError(f"{path.name} is not valid JSON: {exc}", 422) from None
