"""Shapes of the storage management endpoints of the original service and of the
administration API."""

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from schemas.fields import STORAGE_ID_PATTERN, STORAGE_ID_RULE, QueryInteger, StrictInteger

STORAGE_TYPES = ("ACCOUNT", "VM", "TEMP")


class TtlQuerySchema(Schema):
    ttl = QueryInteger(
        required=True,
        validate=validate.Range(min=1),
        metadata={"description": "The new TTL in milliseconds"},
    )


class CreateStorageSchema(Schema):
    """``type`` decides which other fields are needed: ACCOUNT ``account`` and ``name``,
    VM ``vm``, TEMP ``ttl``."""

    type = fields.String(required=True, validate=validate.OneOf(STORAGE_TYPES))
    account = fields.String(validate=validate.Length(min=1), metadata={"description": "ACCOUNT"})
    name = fields.String(validate=validate.Length(min=1), metadata={"description": "ACCOUNT"})
    description = fields.String(metadata={"description": "ACCOUNT, optional"})
    vm = fields.String(
        # The API document shows the pattern; a trailing newline, which "$" lets by, the
        # lifecycle refuses (it matches ids whole).
        validate=validate.Regexp(f"^{STORAGE_ID_PATTERN}$", error=STORAGE_ID_RULE),
        metadata={"description": "VM: the virtual machine's id, which becomes the storage's id"},
    )
    ttl = StrictInteger(validate=validate.Range(min=1), metadata={"description": "TEMP, in ms"})
    historyEnabled = fields.Boolean(
        load_default=False, metadata={"description": "ACCOUNT and VM: keep a history"}
    )

    @validates_schema
    def _fields_of_the_type(self, data: dict[str, Any], **kwargs: Any) -> None:
        needed = {"ACCOUNT": ("account", "name"), "VM": ("vm",), "TEMP": ("ttl",)}
        allowed = {
            "ACCOUNT": {"account", "name", "description", "historyEnabled"},
            "VM": {"vm", "historyEnabled"},
            "TEMP": {"ttl"},
        }
        kind = data.get("type")
        if kind not in needed:
            return
        errors = {
            name: [f"required for a {kind} storage"] for name in needed[kind] if name not in data
        }
        for name in set(data) - allowed[kind] - {"type"}:
            if name == "historyEnabled" and not data[name]:
                continue
            errors[name] = [f"not allowed for a {kind} storage"]
        if errors:
            raise ValidationError(errors)


class StorageSchema(Schema):
    id = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(STORAGE_TYPES))
    deleted = fields.Boolean(required=True)
    historyEnabled = fields.Boolean(required=True)
    account = fields.String(allow_none=True)
    name = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    ttl = fields.Integer(allow_none=True, metadata={"description": "TEMP: TTL in ms"})
    expirationTimestamp = fields.Integer(
        allow_none=True, metadata={"description": "TEMP: expiry, epoch ms"}
    )
    lastUpdated = fields.Integer(allow_none=True, metadata={"description": "epoch ms"})
    layout = fields.String(
        validate=validate.OneOf(["shared", "per-storage"]),
        metadata={
            "description": "Where its keys and history live: the shared indices, or indices "
            "of its own (the original's layout)"
        },
    )


class CreatedStorageSchema(StorageSchema):
    secretKey = fields.String(
        required=True, metadata={"description": "Shown only here and when rotated"}
    )


class SecretKeySchema(Schema):
    id = fields.String(required=True)
    secretKey = fields.String(required=True)


class StorageListQuerySchema(Schema):
    account = fields.String(
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": "The account whose storages to list"},
    )
    page = QueryInteger(
        load_default=1, validate=validate.Range(min=1), metadata={"description": "From 1"}
    )
    size = QueryInteger(
        load_default=50,
        validate=validate.Range(min=1, max=1000),
        metadata={"description": "Storages per page"},
    )

    @validates_schema
    def _window(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("page", 1) * data.get("size", 50) > 10_000:
            raise ValidationError("page x size must stay within the first 10000 storages", "page")


class StorageListSchema(Schema):
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    size = fields.Integer(required=True, metadata={"description": "Storages in this answer"})
    items = fields.List(fields.Nested(StorageSchema), required=True)
