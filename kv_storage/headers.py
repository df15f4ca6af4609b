"""Headers every answer carries, whatever produced it (handlers, errors, static files, and the
answers the HTTP layer gives before a request reaches the application: ``connections``).

- ``X-Content-Type-Options: nosniff``: browsers take each answer for what its content type
  says, so a stored value that looks like HTML or script is never run as one;
- ``Content-Security-Policy``: API answers may load and run nothing (``default-src 'none'``),
  so even a value opened directly in a browser is inert; the Swagger UI pages get a policy of
  their own (``handlers.docs``);
- no ``Server`` header: which server and version answer is nobody's business.
"""

from kv_storage.handlers.docs import DOCS_CSP, is_docs_route

API_CSP = "default-src 'none'; frame-ancestors 'none'"

API_SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": API_CSP,
}
"""What every answer but the Swagger UI's pages carries."""


_DOCS_SECURITY_HEADERS = {**API_SECURITY_HEADERS, "Content-Security-Policy": DOCS_CSP}


def security_headers(route_template: str) -> dict[str, str]:
    """The security headers of the answers of one route (its template: ``/get/{storage_id}/{key}``,
    or ``/api/docs/static`` for the Swagger UI's files). The envelope sets them on every answer
    once its own headers are set, and removes ``Server``."""
    return _DOCS_SECURITY_HEADERS if is_docs_route(route_template) else API_SECURITY_HEADERS
