"""How every answer leaves the service: the original's content types byte for byte, and HEAD
answered like GET on every GET route.

The original's framework wrote ``application/json;charset=utf-8`` and
``text/plain;charset=utf-8``, without a space before ``charset``; its own end-to-end suite
compares the header as a string, and so may its clients. aiohttp writes ``; charset=utf-8``.
Rather than every handler, the error rendering and the streamed list each setting the header
by hand, the envelope's ``on_response_prepare`` hook rewrites it just before the headers go
out, whatever made the answer: success, error, streamed, HEAD. Empty 200 answers (set, delete,
clear, storage management, plain ``/health``) say ``text/plain;charset=utf-8``, the type the
original's suite expected of a set.

Answers that are not the original's API keep their own content type: Prometheus' text format
(``/metrics``) and the Swagger UI with its spec. Their routes are named once, by the
application factory, under ``KEEPS_OWN_CONTENT_TYPE``.
"""

from collections.abc import Iterable

from aiohttp import hdrs, web

from kv_storage.app_keys import KEEPS_OWN_CONTENT_TYPE

JSON = "application/json;charset=utf-8"
TEXT = "text/plain;charset=utf-8"
_ORIGINAL_FORMS = {"application/json": JSON, "text/plain": TEXT}
_UTF8_PARAMETERS: tuple[list[str], ...] = ([], ["charset=utf-8"])


def original_form(content_type: str) -> str | None:
    """The original's spelling of ``content_type`` (``application/json; charset=utf-8`` ->
    ``application/json;charset=utf-8``), or ``None`` for a type the original never sent."""
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    if [parameter.replace(" ", "") for parameter in parameters] not in _UTF8_PARAMETERS:
        return None
    return _ORIGINAL_FORMS.get(media_type)


def answer_as_the_original(request: web.Request, response: web.StreamResponse) -> None:
    """The original's content type, and for HEAD the GET's length (the envelope's hook runs it
    for the answers of the original's API)."""
    declared = response.headers.get(hdrs.CONTENT_TYPE)
    if declared is not None:
        original = _original_forms.get(declared)
        if original is None:
            original = _original_forms.setdefault(declared, original_form(declared) or "")
        if original:
            response.headers[hdrs.CONTENT_TYPE] = original
    if (
        request.method == hdrs.METH_HEAD
        and isinstance(response, web.Response)
        and not response.body
        and hdrs.CONTENT_LENGTH not in response.headers
    ):
        # aiohttp leaves the length out of a HEAD answer whose GET has an empty body; the
        # GET says Content-Length: 0, and HEAD carries the GET's headers.
        response.headers[hdrs.CONTENT_LENGTH] = "0"


_original_forms: dict[str, str] = {}
"""``original_form`` of each content type seen ("" for none): the service answers a handful,
and each answer asked again. A client cannot grow it: the types are the service's own."""


def answer_head_like_get(app: web.Application) -> None:
    """Adds HEAD to every GET route that lacks it, answered by the GET's handler: aiohttp
    sends the status and headers that handler makes and leaves the body out. Load balancers
    probe ``/health`` so, and the original's framework answered HEAD on every GET route.

    The service's routes are registered GET-only (``allow_head=False``), and this runs after
    the API document is built: aiohttp-apispec documents (and consumes the documentation of)
    each handler once, and the document lists GET only, which covers HEAD.
    """
    for resource in app.router.resources():
        if not isinstance(resource, web.Resource):
            continue  # static files answer HEAD by themselves
        methods = {route.method: route for route in resource}
        if hdrs.METH_GET in methods and hdrs.METH_HEAD not in methods:
            resource.add_route(hdrs.METH_HEAD, methods[hdrs.METH_GET].handler)


def keep_own_content_type(app: web.Application, resources: Iterable[web.AbstractResource]) -> None:
    app[KEEPS_OWN_CONTENT_TYPE] = frozenset(resources)
