"""Headers every answer carries, whatever produced it (handlers, errors, static files, and the
answers the HTTP layer gives before a request reaches the application: ``connections``).

- ``X-Content-Type-Options: nosniff``: browsers take each answer for what its content type
  says, so a stored value that looks like HTML or script is never run as one;
- ``Content-Security-Policy``: API answers may load and run nothing (``default-src 'none'``),
  so even a value opened directly in a browser is inert; the Swagger UI pages get a policy of
  their own (``handlers.docs``);
- no ``Server`` header: which server and version answer is nobody's business.
"""

from aiohttp import web

from kv_storage.handlers.docs import DOCS_CSP, is_docs_page

API_CSP = "default-src 'none'; frame-ancestors 'none'"

API_SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": API_CSP,
}
"""What every answer but the Swagger UI's pages carries."""


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: runs once the answer's own headers are set."""
    headers = response.headers
    headers.popall("Server", None)
    headers.update(API_SECURITY_HEADERS)
    if is_docs_page(request.path):
        headers["Content-Security-Policy"] = DOCS_CSP
