"""The original service's storage management endpoints: change the TTL of a TEMP storage,
or delete it. Authorised by the storage's own Secret-Key."""

from typing import Any

from aiohttp import web
from aiohttp_apispec import docs, querystring_schema

from kv_storage.actors.lifecycle import DeleteTemp, UpdateTtl
from kv_storage.app_keys import SERVICE
from kv_storage.handlers.access import authorised_storage, storage_route
from kv_storage.handlers.requests import EMPTY_OK_TYPES, empty_ok
from kv_storage.handlers.spec import (
    SECRET_KEY_ERRORS,
    SECRET_KEY_PARAMETER,
    error_answers,
    storage_id_parameter,
)
from kv_storage.validation import validated
from schemas.management import TtlQuerySchema

CONCURRENT_CHANGES = (
    "Other processes changed the storage's registry document at the same time for the whole "
    "app.request-timeout; nothing was changed, try again"
)
_TAGS = ["storage management"]
_PARAMETERS = [SECRET_KEY_PARAMETER, storage_id_parameter("The TEMP storage's id")]


def _responses(done: str, bad: str) -> dict[int, dict[str, Any]]:
    """Both operations answer alike but for what they do and refuse."""
    return {
        200: {"description": done},
        **error_answers(SECRET_KEY_ERRORS, (400, bad), (409, CONCURRENT_CHANGES)),
    }


@docs(
    tags=_TAGS,
    summary="Change the TTL of a TEMP storage",
    produces=EMPTY_OK_TYPES,
    description=(
        "The expiration moves by the difference of the TTLs: new expiration = old expiration "
        "- old TTL + new TTL. A TTL that puts the expiration in the past ends the storage."
    ),
    parameters=_PARAMETERS,
    responses=_responses(
        "The TTL is changed",
        "The storage is not TEMP, or ttl is invalid (also when the new expiration would be "
        "beyond 2^63-1 ms)",
    ),
)
@querystring_schema(TtlQuerySchema)
@storage_route
async def update_ttl(request: web.Request) -> web.Response:
    ttl_ms = validated(request, "querystring")["ttl"]
    command = UpdateTtl(authorised_storage(request), ttl_ms)
    await request.app[SERVICE].lifecycle.ask(command)
    return empty_ok()


@docs(
    tags=_TAGS,
    summary="Delete a TEMP storage",
    produces=EMPTY_OK_TYPES,
    description="Marks it deleted in the registry and removes its data.",
    parameters=_PARAMETERS,
    responses=_responses("The storage is deleted", "The storage is not TEMP"),
)
@storage_route
async def delete_temp(request: web.Request) -> web.Response:
    await request.app[SERVICE].lifecycle.ask(DeleteTemp(authorised_storage(request)))
    return empty_ok()


def add_routes(app: web.Application) -> None:
    app.router.add_put("/storage/{storage_id}", update_ttl)
    app.router.add_delete("/storage/{storage_id}", delete_temp)
