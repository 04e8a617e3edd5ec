"""python-consul-lock's API (``EphemeralLock``, ``LockAcquisitionException``), on the Rust core.

Differences from python-consul-lock 0.1.6, all where it was wrong:

* the session is renewed (TTL 15 s); ``lock_timeout_seconds`` is the longest hold (the lock is then
  released and reported lost), not a TTL nobody renews;
* ``release()`` is owner-checked and leaves no session behind, also after a failed ``acquire``;
* waiting is a Consul blocking query, not polling with sleeps;
* a lock object can be acquired again after ``release()`` (the seed's were single use);
* bad settings raise :class:`consul_lock.InvalidConfig` (a ``ValueError``), not ``AssertionError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import defaults
from ._errors import InvalidConfig, LockError, NotAcquired
from ._lock import Lock

if TYPE_CHECKING:
    ConsulLockException = LockError
else:
    try:
        from consul import ConsulException as _ConsulException
    except ImportError:  # neither py-consul nor python-consul is installed
        ConsulLockException = LockError
    else:

        class ConsulLockException(LockError, _ConsulException):
            """A consul_lock error that is also a ``consul.ConsulException`` (as in the seed)."""


class LockAcquisitionException(NotAcquired, ConsulLockException):
    """The seed's exception for a lock not acquired: a :class:`consul_lock.NotAcquired` (and a
    ``consul.ConsulException`` when py-consul or python-consul is installed)."""


class EphemeralLock:
    """python-consul-lock's lock: ``EphemeralLock(key, acquire_timeout_ms=None,
    lock_timeout_seconds=None, consul_client=None)``; unset arguments come from
    :mod:`consul_lock.defaults`. The key is ``defaults.lock_key_pattern % key``."""

    def __init__(
        self,
        key: str,
        acquire_timeout_ms: int | None = None,
        lock_timeout_seconds: int | None = None,
        consul_client: Any = None,
    ) -> None:
        if not key or not isinstance(key, str):
            raise InvalidConfig("key is required for locking")
        self.key = key
        self.full_key = defaults.lock_key_pattern % key
        self.acquire_timeout_ms = (
            defaults.acquire_timeout_ms if acquire_timeout_ms is None else acquire_timeout_ms
        )
        self.lock_timeout_seconds = (
            defaults.lock_timeout_seconds if lock_timeout_seconds is None else lock_timeout_seconds
        )
        if not isinstance(self.acquire_timeout_ms, int) or self.acquire_timeout_ms < 0:
            raise InvalidConfig(f"acquire_timeout_ms must be an int >= 0, got {self.acquire_timeout_ms!r}")
        if not 10 <= self.lock_timeout_seconds <= 3600:
            raise InvalidConfig(
                f"lock_timeout_seconds must be between 10 and 3600, got {self.lock_timeout_seconds!r}"
            )
        client = consul_client if consul_client is not None else defaults.consul_client
        # lock_delay 0 as the seed: a crashed holder's key is free as soon as its session is gone.
        self._lock = Lock(
            self.full_key, client=client, lock_delay=0, max_hold=float(self.lock_timeout_seconds)
        )

    @property
    def session_id(self) -> str | None:
        """The Consul session holding the key, while held."""
        g = self._lock.guard
        return g.session_id if g is not None else None

    def acquire(self, fail_hard: bool = True) -> bool:
        """Take the lock, waiting up to ``acquire_timeout_ms``. ``True`` when taken; otherwise
        ``LockAcquisitionException`` (``fail_hard=True``) or ``False``."""
        if self._lock.acquire(timeout=self.acquire_timeout_ms / 1000.0):
            return True
        if fail_hard:
            raise LockAcquisitionException(f"Failed to acquire {self.full_key}", key=self.full_key)
        return False

    def release(self) -> bool:
        """Release the lock: ``True`` if this object held it, ``False`` if it did not."""
        if self._lock.guard is None:
            return False
        self._lock.release()
        return True

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """``with lock.hold():`` acquires (failing hard) and releases on the way out."""
        self.acquire(fail_hard=True)
        try:
            yield
        finally:
            self.release()

    def __repr__(self) -> str:
        return f"<EphemeralLock {self.full_key!r}>"
