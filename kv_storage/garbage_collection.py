"""How the serving process runs Python's cyclic garbage collector.

Reference counting frees almost everything a request makes as soon as its answer is sent;
the cyclic collector only has cycles to find. With Python's defaults it runs far more often
than that needs: a young collection each time 700 more tracked objects (dicts, lists,
instances) exist than were freed, which one ``_msearch`` answer of eight pages of keys (a
thousand small dicts and lists) passes on its own; and up to one collection in a hundred is
a full one, which walks every object of the process: configuration, routes, schemas, the client,
the actors. Counted with ``gc.callbacks`` (``bench/ab.py``'s scenarios, 10 s each): pages by
prefix at 16 connections, 2,500 young and 18 full collections, 1.1 s of CPU out of 13 (38 ms
per full collection); single sets at 64 connections, 0.8 s out of 8.4; single gets at 16
connections, whose answers are small, 0.02 s out of 7.3.

Two settings, both usual for long-running servers, change that:

- once the service has started, what start-up built is collected once and then frozen
  (``gc.freeze``): it lives as long as the process, so walking it found nothing. A full
  collection then costs 2 ms instead of 38;
- a young collection starts after 10,000 surviving objects instead of 700: bursts that
  reference counting frees anyway no longer start one. Cycles are still found, a little
  later.

Only ``kv-storage serve`` applies them; tests and the command-line tools keep Python's
defaults.
"""

import gc

from aiohttp import web

YOUNG_THRESHOLD = 10_000
"""Surviving tracked objects that start a young collection (Python's default: 700)."""


def tune_for_serving(app: web.Application) -> None:
    """Raises the young generation's threshold now, and freezes what start-up built once the
    application has started (after every part of it: this runs after the cleanup contexts)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    app.on_startup.append(_freeze_start_up)


async def _freeze_start_up(app: web.Application) -> None:
    gc.collect()
    gc.freeze()
