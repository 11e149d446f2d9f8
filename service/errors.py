"""Errors the write path raises and every surface (HTTP, CLI) translates: 404 and 409."""


class ConflictError(ValueError):
    """The request clashes with what is stored (a duplicate name, say)."""


class NotFoundError(LookupError):
    pass
