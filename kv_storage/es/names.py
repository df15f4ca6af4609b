"""Index and template names, with the deployment's index prefix applied to each."""

from dataclasses import dataclass

REGISTRY = "storage-registry"
REGISTRY_LOCK = "storage-registry-lock"
SIGNING_KEYS = "storage-signing-keys"
DATA_TEMPLATE = "storage-data"
HISTORY_TEMPLATE = "storage-history"
SHARED_DATA = "storage-shared-data"
SHARED_HISTORY = "storage-shared-history"
"""The indices of every storage in the shared layout: names the per-storage templates'
patterns (``storage-data-*``, ``storage-history-*``) do not match."""


@dataclass(frozen=True, slots=True)
class IndexNames:
    prefix: str = ""

    @property
    def registry(self) -> str:
        return f"{self.prefix}{REGISTRY}"

    @property
    def registry_lock(self) -> str:
        return f"{self.prefix}{REGISTRY_LOCK}"

    @property
    def signing_keys(self) -> str:
        return f"{self.prefix}{SIGNING_KEYS}"

    @property
    def data_template(self) -> str:
        return f"{self.prefix}{DATA_TEMPLATE}"

    @property
    def history_template(self) -> str:
        return f"{self.prefix}{HISTORY_TEMPLATE}"

    @property
    def shared_data(self) -> str:
        return f"{self.prefix}{SHARED_DATA}"

    @property
    def shared_history(self) -> str:
        return f"{self.prefix}{SHARED_HISTORY}"

    def data(self, storage_id: str) -> str:
        return f"{self.prefix}{DATA_TEMPLATE}-{storage_id}"

    def history(self, storage_id: str) -> str:
        return f"{self.prefix}{HISTORY_TEMPLATE}-{storage_id}"
