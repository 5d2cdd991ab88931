"""Every error digestd raises on purpose.

    DigestdError                 base: a message meant for a person, never a traceback
    ├── ConfigError              a bad DIGESTD_* value or --config file (exit 2)
    ├── InputError               a bad file, row or argument given by the operator (exit 2)
    │   └── ValidationError      one item failed validation; `.field` names the field
    ├── SchemaError              the database is not at this digestd's schema (exit 2)
    └── DeliveryError            the SMTP side refused or failed
        ├── TemporaryDeliveryError   4xx, timeout, dropped connection: retry later
        └── PermanentDeliveryError   5xx: do not retry (bounce_policy says what it means)

Library exceptions are converted into these at the boundary (``raise ... from exc``)
so callers only handle digestd's own tree.
"""

from __future__ import annotations


class DigestdError(Exception):
    """Base class: ``str(exc)`` is a complete sentence for the operator."""


class ConfigError(DigestdError):
    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class InputError(DigestdError):
    pass


class ValidationError(InputError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class SchemaError(DigestdError):
    """No database yet, or one behind (or ahead of) the migrations this digestd has: only
    ``digestd migrate`` and ``digestd run`` change the schema."""


class DeliveryError(DigestdError):
    """``code``: the SMTP reply code; ``stage``: the command it answered (``rcpt``,
    ``data``, ``end-of-data``, as ``readers.bounce_policy.Stage`` names them)."""

    def __init__(self, message: str, code: int | None = None, stage: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.stage = stage


class TemporaryDeliveryError(DeliveryError):
    pass


class NotSentError(TemporaryDeliveryError):
    """The message never left: its session was lost or closed before its content went out
    (it waited behind another, or for a connection). Tried again at once, the try not
    counted."""


class PermanentDeliveryError(DeliveryError):
    pass


def first_line(exc: BaseException) -> str:
    """The driver's own message of a database error, one line (SQLAlchemy appends the
    statement and a documentation link on further lines)."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__
