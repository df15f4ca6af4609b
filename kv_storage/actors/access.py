"""Who may use a storage: the one check behind every Secret-Key authorised call."""

from kv_storage.actors.cache import CacheActor
from kv_storage.clock import now_ms
from kv_storage.errors import NotFoundError, UnauthorizedError
from kv_storage.model import Storage, can_name_a_storage


async def authorise(
    cache: CacheActor, storage_id: str, secret_key: str, *, index_prefix: str
) -> Storage:
    """The live storage, if ``secret_key`` is its secret: else 404 (none) or 401 (wrong)."""
    if not can_name_a_storage(storage_id, index_prefix):
        raise NotFoundError(f"storage {storage_id} does not exist")
    storage = await cache.look_up(storage_id)
    if storage is None or storage.expired(now_ms()):
        raise NotFoundError(f"storage {storage_id} does not exist")
    if not storage.accepts(secret_key):
        raise UnauthorizedError("the Secret-Key is not this storage's")
    return storage
