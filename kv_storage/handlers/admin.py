"""The administration API: create, read, list, delete storages and rotate their secrets.

Authorised by ``Authorization: Bearer <admin.token>``; without a configured token every call
answers 403. Registry documents keep the layout the CloudStack plugin wrote.
"""

import hmac
from collections.abc import Callable

from aiohttp import web
from aiohttp_apispec import docs, querystring_schema, request_schema

from kv_storage.actors.lifecycle import (
    DeleteStorage,
    ListStorages,
    RotateSecret,
    ShowStorage,
    create_command,
)
from kv_storage.app_keys import SERVICE
from kv_storage.errors import ForbiddenError, UnauthorizedError
from kv_storage.es.registry import EntryPage, RegistryEntry, storage_view
from kv_storage.handlers.management import CONCURRENT_CHANGES
from kv_storage.handlers.spec import ADMIN_ERRORS, error_answers, storage_id_parameter
from kv_storage.validation import validated
from schemas.management import (
    CreatedStorageSchema,
    CreateStorageSchema,
    SecretKeySchema,
    StorageListQuerySchema,
    StorageListSchema,
    StorageSchema,
)

ADMIN_SCHEME = "AdminToken"
SECURITY_DEFINITIONS = {
    ADMIN_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Bearer <admin.token>`",
    }
}
_TAGS = ["administration"]
_SECURITY: list[dict[str, list[str]]] = [{ADMIN_SCHEME: []}]
_STORAGE_ID = storage_id_parameter()
_storage = StorageSchema()
_created = CreatedStorageSchema()
_secret = SecretKeySchema()
_list = StorageListSchema()


ADMIN_PREFIX = "/admin/"


def admin_check(token: str | None) -> Callable[[web.Request], None]:
    """The check of the bearer token of every /admin/ call, before anything else reads the
    request (the envelope runs it: ``kv_storage.envelope``)."""
    expected = token.encode() if token is not None else None

    def check(request: web.Request) -> None:
        if expected is None:
            raise ForbiddenError("the administration API is disabled: set admin.token to enable it")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # A header that is not UTF-8 keeps its bytes as surrogates: back to those bytes, it
        # matches no token.
        given_bytes = given.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given_bytes, expected):
            raise UnauthorizedError(
                "a valid administrator token is needed: Authorization: Bearer <admin.token>",
                headers={"WWW-Authenticate": 'Bearer realm="kv-storage admin"'},
            )

    return check


@docs(
    tags=_TAGS,
    summary="Create a storage",
    description=(
        "ACCOUNT needs `account` and `name` (`description` and `historyEnabled` optional); VM "
        "needs `vm`, the virtual machine's id, which becomes the storage's id "
        "(`historyEnabled` optional); TEMP needs `ttl` in ms. The answer holds the storage's "
        "secret key, which is shown again only when it is rotated."
    ),
    consumes=["application/json"],
    security=_SECURITY,
    responses={
        201: {"description": "Created", "schema": CreatedStorageSchema},
        **error_answers(
            ADMIN_ERRORS,
            (400, "Invalid body (also a TEMP ttl whose expiration is beyond 2^63-1 ms)"),
            (409, "The VM has a storage already"),
        ),
    },
)
@request_schema(CreateStorageSchema)
async def create_storage(request: web.Request) -> web.Response:
    command = create_command(validated(request, "json"))
    entry: RegistryEntry = await request.app[SERVICE].lifecycle.ask(command)
    answer = _created.dump({**storage_view(entry), "secretKey": entry.secret_key})
    return web.json_response(answer, status=201)


@docs(
    tags=_TAGS,
    summary="Read a storage's metadata",
    security=_SECURITY,
    parameters=[_STORAGE_ID],
    responses={
        200: {"description": "The metadata (never the secret)", "schema": StorageSchema},
        **error_answers(ADMIN_ERRORS, (404, "No such storage")),
    },
)
async def show_storage(request: web.Request) -> web.Response:
    entry = await request.app[SERVICE].lifecycle.ask(ShowStorage(request.match_info["storage_id"]))
    return web.json_response(_storage.dump(storage_view(entry)))


@docs(
    tags=_TAGS,
    summary="List an account's storages",
    description="Storages not deleted, most recently changed first.",
    security=_SECURITY,
    responses={
        200: {"description": "A page of storages", "schema": StorageListSchema},
        **error_answers(ADMIN_ERRORS, (400, "Invalid parameters")),
    },
)
@querystring_schema(StorageListQuerySchema)
async def list_storages(request: web.Request) -> web.Response:
    query = validated(request, "querystring")
    command = ListStorages(query["account"], query["page"], query["size"])
    found: EntryPage = await request.app[SERVICE].lifecycle.ask(command)
    items = [storage_view(entry) for entry in found.entries]
    answer = {"total": found.total, "page": query["page"], "size": len(items), "items": items}
    return web.json_response(_list.dump(answer))


@docs(
    tags=_TAGS,
    summary="Delete a storage of any type",
    description="Marks it deleted in the registry and removes its data and history indices.",
    security=_SECURITY,
    parameters=[_STORAGE_ID],
    responses={
        200: {"description": "Deleted; the answer is its metadata", "schema": StorageSchema},
        **error_answers(
            ADMIN_ERRORS,
            (404, "No such storage, or deleted already"),
            (409, CONCURRENT_CHANGES),
        ),
    },
)
async def delete_storage(request: web.Request) -> web.Response:
    entry = await request.app[SERVICE].lifecycle.ask(
        DeleteStorage(request.match_info["storage_id"])
    )
    return web.json_response(_storage.dump(storage_view(entry)))


@docs(
    tags=_TAGS,
    summary="Rotate a storage's secret key",
    description="The old secret stops working at once on this instance, and on every other "
    "within app.cache.update-time.",
    security=_SECURITY,
    parameters=[_STORAGE_ID],
    responses={
        200: {"description": "The new secret key", "schema": SecretKeySchema},
        **error_answers(ADMIN_ERRORS, (404, "No such storage"), (409, CONCURRENT_CHANGES)),
    },
)
async def rotate_secret(request: web.Request) -> web.Response:
    entry = await request.app[SERVICE].lifecycle.ask(RotateSecret(request.match_info["storage_id"]))
    return web.json_response(_secret.dump({"id": entry.id, "secretKey": entry.secret_key}))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/storages", create_storage)
    app.router.add_get("/admin/storages", list_storages, allow_head=False)
    app.router.add_get("/admin/storages/{storage_id}", show_storage, allow_head=False)
    app.router.add_delete("/admin/storages/{storage_id}", delete_storage)
    app.router.add_post("/admin/storages/{storage_id}/secret-key", rotate_secret)
