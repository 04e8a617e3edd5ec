"""The exceptions of consul_lock. Every one is a :class:`LockError`; some are also the builtin
exception a Python programmer would catch for the same thing (``NotAcquired`` is a ``TimeoutError``,
``InvalidConfig`` a ``ValueError``, ``TransportError`` a ``ConnectionError``).

Messages name keys and addresses, never ACL tokens.
"""

from __future__ import annotations

from typing import Any


class LockError(Exception):
    """Base class of every consul_lock error."""

    key: str | None

    def __init__(self, message: str, *, key: str | None = None, **attrs: Any) -> None:
        super().__init__(message)
        self.key = key
        for name, value in attrs.items():
            setattr(self, name, value)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), str(self), dict(self.__dict__)))


def _rebuild(cls: type[LockError], message: str, attrs: dict[str, Any]) -> LockError:
    return cls(message, **attrs)


class NotAcquired(LockError, TimeoutError):
    """Someone else held the lock (or the semaphore's slots) until the deadline."""

    waited: float | None = None


class LockLost(LockError):
    """The lock was held and is known lost: its session expired or was destroyed, the key was
    deleted or taken, or ``max_hold`` ran out."""


class AlreadyHeld(LockError, RuntimeError):
    """``acquire`` on a lock object that already holds its key (locks are not re-entrant)."""


class NotHeld(LockError, RuntimeError):
    """``release`` of a lock object that does not hold its key (like ``threading.Lock``)."""


class Conflict(LockError):
    """The key belongs to another kind of primitive (a semaphore's key, say), or a semaphore's
    stored limit differs from this contender's."""


class InvalidConfig(LockError, ValueError):
    """An invalid setting or argument, reported before any request is sent."""


class ConsulError(LockError):
    """Consul answered with an error (``status`` is the HTTP status when known)."""

    status: int | None = None


class PermissionDenied(ConsulError, PermissionError):
    """Consul's ACLs refused the request."""


class DecodeError(ConsulError):
    """Consul answered something consul_lock could not understand."""


class TransportError(LockError, ConnectionError):
    """Consul could not be reached or did not answer in time."""


class ForkedProcessError(LockError, RuntimeError):
    """An object made before ``os.fork()`` was used in the child. It never renews, releases or
    deletes the parent's lock from the child: make a new one there."""


__all__ = [
    "AlreadyHeld",
    "Conflict",
    "ConsulError",
    "DecodeError",
    "ForkedProcessError",
    "InvalidConfig",
    "LockError",
    "LockLost",
    "NotAcquired",
    "NotHeld",
    "PermissionDenied",
    "TransportError",
]
