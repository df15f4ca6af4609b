"""Structured logs: one JSON object (or one logfmt line) per record, with the request id.

Loads nothing of the web stack, so every command (not only ``serve``) can configure logging
cheaply; the request id's HTTP side is in ``kv_storage.http_logs``.
"""

import contextvars
import json
import logging
import re
import sys
import time

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
"""The request a log line is about (``kv_storage.http_logs`` sets it for each request)."""


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, object]:
    fields: dict[str, object] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": record.getMessage(),
    }
    identifier = getattr(record, "request_id", None)
    if identifier:
        fields["request_id"] = identifier
    if record.exc_info:
        fields["error"] = formatter.formatException(record.exc_info)
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record, self), ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(
            f"{key}={_logfmt_value(value)}" for key, value in _fields(record, self).items()
        )


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not re.search(r'[\s="\\]', text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


FORMATTERS: dict[str, type[logging.Formatter]] = {"json": JsonFormatter, "logfmt": LogfmtFormatter}


def configure(log_format: str, level: int = logging.INFO) -> None:
    """The process's logging: one handler on standard error, in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATTERS[log_format]())
    handler.addFilter(_RequestIdFilter())
    handler.addFilter(_without_client_traceback)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The client logs every request at INFO (far too much) and node failures with a traceback;
    # a failing node is worth a line, its stack is not.
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)


def _without_client_traceback(record: logging.LogRecord) -> bool:
    if record.name.startswith("elastic_transport"):
        record.exc_info = None
        record.exc_text = None
    return True
