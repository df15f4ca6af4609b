"""Shapes of ``GET /health``, as the original service answered it."""

from marshmallow import Schema, fields, validate


class HealthQuerySchema(Schema):
    detailed = fields.Boolean(
        load_default=False,
        truthy={"true", "True", "TRUE"},
        falsy={"false", "False", "FALSE"},
        metadata={"description": "Also check the Elasticsearch indices and templates"},
    )


class HealthCheckSchema(Schema):
    name = fields.String(
        required=True,
        validate=validate.OneOf(
            [
                "STORAGE_REGISTRY",
                "STORAGE_DATA_TEMPLATE",
                "STORAGE_HISTORY_TEMPLATE",
                "SHARD_BUDGET",
            ]
        ),
    )
    status = fields.String(required=True, validate=validate.OneOf(["HEALTHY", "UNHEALTHY"]))
    message = fields.String(
        required=True,
        metadata={
            "description": "OK, Not found, or the Elasticsearch error; SHARD_BUDGET, there "
            "only from 90% of the cluster's shard limit on, says how many are in use"
        },
    )


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["HEALTHY", "UNHEALTHY"]))
    checks = fields.List(fields.Nested(HealthCheckSchema), required=True)
