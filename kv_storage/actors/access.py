"""Who may use a storage: the one check behind every Secret-Key authorised call."""

from kv_storage.actors.cache import CacheActor
from kv_storage.errors import BadRequestError, NotFoundError, UnauthorizedError
from kv_storage.model import Storage, is_storage_id
from schemas.fields import STORAGE_ID_RULE


async def authorise(cache: CacheActor, storage_id: str, secret_key: str) -> Storage:
    """The live storage, if ``secret_key`` is its secret: else 400 (an id no storage can
    have), 404 (none) or 401 (wrong)."""
    if not is_storage_id(storage_id):
        raise BadRequestError(f"{storage_id!r} is not a storage id: {STORAGE_ID_RULE}")
    storage = await cache.look_up(storage_id)
    if storage is None:
        raise NotFoundError(f"storage {storage_id} does not exist")
    if not storage.accepts(secret_key):
        raise UnauthorizedError("the Secret-Key is not this storage's")
    return storage
