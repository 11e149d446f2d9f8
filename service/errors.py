"""Errors the write path raises and every surface (HTTP, CLI) translates: 404 and 409."""


class ConflictError(ValueError):
    """The request clashes with what is stored (a duplicate name, say)."""


class NotFoundError(LookupError):
    pass


class StoreBusyError(RuntimeError):
    """The embedded Qdrant folder is held by another process (a running `capprof serve`, say)."""
