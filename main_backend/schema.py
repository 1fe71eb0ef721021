"""Every table of the main backend, for Alembic: one `metadata`."""

from main_backend.conversation import tables as _conversation_tables  # noqa: F401  registers
from main_backend.events.tables import metadata

__all__ = ["metadata"]
