"""The body of every error answer."""

from marshmallow import Schema, fields


class ErrorSchema(Schema):
    error = fields.String(
        required=True,
        metadata={"description": "What went wrong", "example": "detailed: Not a valid boolean."},
    )
