"""The history pipeline's settings (``app.history.*``), owned here: the service builds them
from its configuration and hands them in.

Each is declared once, as its field (``schemas.settings``, which the pipeline may import: it
knows nothing of the service); the service's configuration finds them there, as it finds its
own sections' settings.
"""

from dataclasses import dataclass

from schemas.settings import at_least, positive_duration, setting


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    flush_size: int = setting(
        "app.history.flush-size",
        1000,
        at_least(1),
        "History records written in one bulk request.",
    )
    flush_timeout_s: float = setting(
        "app.history.flush-timeout",
        "30 seconds",
        positive_duration,
        "Longest time a history record waits before it is written.",
    )
    """Longest a record waits before it goes, and the pause before a failed one goes again."""
    retry_limit: int = setting(
        "app.history.retry-limit",
        5,
        at_least(0),
        "Retries of a failed history write: a record is tried at most retry-limit + 1 times, "
        "then logged as lost.",
    )
    """Retries after the first attempt: a record is tried at most ``retry_limit + 1`` times."""
    buffer_size: int = setting(
        "app.history.buffer-size",
        100_000,
        at_least(1),
        "Most history records held while Elasticsearch is not taking them; more are dropped.",
    )
    """Most records held (waiting, to retry, in flight); more are dropped."""
    buffer_share_per_storage: int = setting(
        "app.history.buffer-share-per-storage",
        0,
        at_least(0),
        "Most of those records one storage may hold (0: a tenth of app.history.buffer-size); "
        "its further records are dropped while other storages' are still taken. At most "
        "app.history.buffer-size.",
    )
    """Most records of one storage held: one storage's flood cannot fill the buffer, so the
    others' records are still taken; that storage's further records are dropped. The
    property's 0 is no share: the service's loader makes it a tenth of the buffer, so this
    field, unlike the others, has no usable default."""

    def __post_init__(self) -> None:
        if not 1 <= self.buffer_share_per_storage <= self.buffer_size:
            raise ValueError(
                f"the share per storage ({self.buffer_share_per_storage}) must be between 1 and "
                f"the buffer size ({self.buffer_size})"
            )
