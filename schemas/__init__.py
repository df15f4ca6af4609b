"""Marshmallow schemas: every shape the service reads or writes over HTTP."""
