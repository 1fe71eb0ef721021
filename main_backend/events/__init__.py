"""The event store: append-only thread logs, their read models and the global feed."""
