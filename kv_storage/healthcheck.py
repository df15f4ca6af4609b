"""``kv-storage healthcheck``: the container's ``HEALTHCHECK``, asking the running service.

It reads the same configuration as ``serve``, so it asks the port (and scheme) the service
was configured with, not a fixed 8080. It connects to the loopback address, where the
certificate's host name cannot be expected to match, so over HTTPS it does not check the
certificate: it asks whether the local process answers, not whom to trust.
"""

import ssl
import urllib.error
import urllib.request

from kv_storage.config import Config

TIMEOUT_S = 4.0


def probe_url(config: Config) -> str:
    host = config.server.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1" if host != "::" else "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{config.server.scheme}://{host}:{config.server.port}/health"


def check(config: Config) -> str | None:
    """``None`` when the service answers 200, else what went wrong."""
    url = probe_url(config)
    context = None
    if config.server.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:
        return f"{url} answered {error.code}"
    except (OSError, urllib.error.URLError) as error:
        return f"{url}: {getattr(error, 'reason', error)}"
    return None if status == 200 else f"{url} answered {status}"
