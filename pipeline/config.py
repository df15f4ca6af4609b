"""The history pipeline's settings (``app.history.*``), owned here: the service builds them
from its configuration and hands them in."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    flush_size: int
    """Records written in one bulk request."""
    flush_timeout_s: float
    """Longest a record waits before it goes, and the pause before a failed one goes again."""
    retry_limit: int
    """Retries after the first attempt: a record is tried at most ``retry_limit + 1`` times."""
    buffer_size: int
    """Most records held (waiting, to retry, in flight); more are dropped."""
    buffer_share_per_storage: int
    """Most records of one storage held: one storage's flood cannot fill the buffer, so the
    others' records are still taken; that storage's further records are dropped."""

    def __post_init__(self) -> None:
        if not 1 <= self.buffer_share_per_storage <= self.buffer_size:
            raise ValueError(
                f"the share per storage ({self.buffer_share_per_storage}) must be between 1 and "
                f"the buffer size ({self.buffer_size})"
            )
