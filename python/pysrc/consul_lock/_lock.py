"""``Lock`` and ``AsyncLock``: a Consul lock with the feel of ``threading.Lock`` / ``asyncio.Lock``.

One object is one lock, like ``threading.Lock``: threads (or tasks) sharing it wait for each other
locally, and separate objects — in this process or on other hosts — wait for each other through
Consul. A lock is not re-entrant; any thread may release it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _native
from ._client import resolve
from ._errors import AlreadyHeld, ForkedProcessError, NotAcquired, NotHeld
from ._held import AsyncGuard, Guard, Holder
from ._util import key_arg, seconds_arg, timeout_arg, value_arg

if TYPE_CHECKING:
    from ._session import AsyncSession, Session

_MIN_TTL, _MAX_TTL, _MAX_LOCK_DELAY = 10.0, 86400.0, 60.0


def _native_lock(
    key: str,
    client: Any,
    session: Session | AsyncSession | None,
    ttl: float | None,
    lock_delay: float | None,
    max_hold: float | None,
    value: bytes | str | None,
    fair: bool,
    session_name: str | None,
) -> _native.Lock:
    key_arg("key", key)
    if session is not None:
        return _native.Lock(
            key,
            session=session._native,
            max_hold=seconds_arg("max_hold", max_hold),
            value=value_arg(value),
            fair=bool(fair),
        )
    return _native.Lock(
        key,
        client=resolve(client),
        ttl=seconds_arg("ttl", ttl, low=_MIN_TTL, high=_MAX_TTL),
        lock_delay=seconds_arg("lock_delay", lock_delay, low=0.0, high=_MAX_LOCK_DELAY),
        max_hold=seconds_arg("max_hold", max_hold),
        value=value_arg(value),
        fair=bool(fair),
        session_name=session_name,
    )


class _LockBase:
    def __init__(
        self,
        key: str,
        *,
        client: Any = None,
        ttl: float = 15.0,
        lock_delay: float = 15.0,
        max_hold: float | None = None,
        value: bytes | str | None = None,
        fair: bool = False,
        session_name: str | None = None,
        session: Session | AsyncSession | None = None,
    ) -> None:
        if session is not None:
            if client is not None:
                raise_invalid("pass either client or session, not both")
            self._native = _native_lock(key, None, session, None, None, max_hold, value, fair, None)
        else:
            self._native = _native_lock(
                key, client, None, ttl, lock_delay, max_hold, value, fair, session_name
            )
        self._pid = os.getpid()

    @property
    def key(self) -> str:
        """The locked key, verbatim."""
        return self._native.key

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            raise ForkedProcessError(
                f"this {type(self).__name__} was created in process {self._pid} and cannot be used in "
                f"this forked child (pid {os.getpid()}); create a new one in the child",
                key=self.key,
            )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key!r}>"


def raise_invalid(message: str) -> None:
    from ._errors import InvalidConfig

    raise InvalidConfig(message)


class Lock(_LockBase):
    """A distributed lock on one Consul key.

    ``Lock(key, *, client=None, ttl=15.0, lock_delay=15.0, max_hold=None, value=None, fair=False)``:
    ``client`` is a :class:`consul_lock.Client`, a py-consul ``consul.Consul``, or ``None`` (Consul's
    environment variables); ``ttl`` the session TTL (10-86400 s, renewed every TTL/2 on a Rust
    thread); ``lock_delay`` Consul's lock-delay after a holder's session is invalidated (0-60 s);
    ``max_hold`` releases the lock and reports it lost after that long; ``value`` replaces the holder
    JSON stored in the key; ``fair`` serves waiters first come, first served.
    """

    def __init__(
        self,
        key: str,
        *,
        client: Any = None,
        ttl: float = 15.0,
        lock_delay: float = 15.0,
        max_hold: float | None = None,
        value: bytes | str | None = None,
        fair: bool = False,
        session_name: str | None = None,
        session: Session | None = None,
    ) -> None:
        super().__init__(
            key,
            client=client,
            ttl=ttl,
            lock_delay=lock_delay,
            max_hold=max_hold,
            value=value,
            fair=fair,
            session_name=session_name,
            session=session,
        )
        self._local = threading.Lock()
        self._guard: Guard | None = None
        self._owner: int | None = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock; ``True`` when taken, ``False`` when someone else held it until the
        timeout. ``timeout=-1`` waits as long as it takes, ``blocking=False`` tries once (as
        ``threading.Lock.acquire``). Consul failing raises (never ``False``). The GIL is released
        while waiting; Ctrl-C raises ``KeyboardInterrupt`` and leaves nothing behind."""
        self._check_pid()
        wait = timeout_arg(blocking, timeout)
        if self._owner == threading.get_ident() and self._guard is not None:
            raise AlreadyHeld(
                f"this thread already holds lock {self.key!r}; locks are not re-entrant", key=self.key
            )
        start = time.monotonic()
        if wait is None:
            got = self._local.acquire()
        elif wait == 0:
            got = self._local.acquire(False)
        else:
            got = self._local.acquire(True, wait)
        if not got:
            return False
        try:
            left = None if wait is None else max(0.0, wait - (time.monotonic() - start))
            held = self._native.acquire(left)
        except BaseException:
            self._local.release()
            raise
        if held is None:
            self._local.release()
            return False
        self._guard = Guard(held, self)
        self._owner = threading.get_ident()
        return True

    def release(self) -> None:
        """Release the lock (owner-checked delete, then the session is destroyed). ``NotHeld`` when
        this object does not hold it. Releasing a lost lock cleans up and returns."""
        self._check_pid()
        guard = self._guard
        if guard is None:
            raise NotHeld(f"release of lock {self.key!r}, which this object does not hold", key=self.key)
        self._guard = None
        self._owner = None
        try:
            guard.release()
        finally:
            self._local.release()

    def hold(self, timeout: float = -1, *, blocking: bool = True) -> _Holding:
        """``with lock.hold(timeout=5.0) as guard:`` takes the lock (``NotAcquired`` after the
        timeout) and gives its :class:`Guard`; leaving the block releases it, and raises
        :class:`LockLost` when it was lost inside."""
        timeout_arg(blocking, timeout)
        return _Holding(self, blocking, timeout)

    def __enter__(self) -> Guard:
        if not self.acquire():
            raise NotAcquired(f"lock {self.key!r} not acquired", key=self.key)
        assert self._guard is not None
        return self._guard

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        guard = self._guard
        was_lost = guard is not None and guard.lost
        self.release()
        if was_lost and exc_type is None:
            from ._errors import LockLost

            raise LockLost(f"lock {self.key!r} was lost inside the with block", key=self.key)

    @property
    def is_held(self) -> bool:
        """``True`` while this object holds the lock and it is not known lost. No request."""
        g = self._guard
        return g is not None and g.is_held

    @property
    def lost(self) -> bool:
        """``True`` when this object's lock is known lost (see :attr:`Guard.lost`). No request."""
        g = self._guard
        return g is not None and g.lost

    @property
    def guard(self) -> Guard | None:
        """The guard of the current hold, if any."""
        return self._guard

    @property
    def fencing_token(self) -> int | None:
        """The fencing token while held, else ``None``."""
        g = self._guard
        return g.fencing_token if g is not None and g.is_held else None

    def locked(self) -> bool:
        """Whether anyone holds the key now (asks Consul)."""
        return self.holder() is not None

    def holder(self) -> Holder | None:
        """Who holds the key now (asks Consul), or ``None``."""
        self._check_pid()
        return Holder._from(self._native.holder())


class _Holding:
    __slots__ = ("_blocking", "_guard", "_lock", "_timeout")

    def __init__(self, lock: Lock, blocking: bool, timeout: float) -> None:
        self._lock, self._blocking, self._timeout = lock, blocking, timeout
        self._guard: Guard | None = None

    def __enter__(self) -> Guard:
        if not self._lock.acquire(self._blocking, self._timeout):
            waited = "" if not self._blocking else f" within {self._timeout:g} s"
            raise NotAcquired(f"lock {self._lock.key!r} not acquired{waited}", key=self._lock.key)
        guard = self._lock.guard
        assert guard is not None
        self._guard = guard
        return guard

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.__exit__(exc_type, exc, tb)


class AsyncLock(_LockBase):
    """:class:`Lock` for asyncio: ``async with lock:``, ``await lock.acquire(timeout=5.0)``.

    A cancelled ``acquire`` leaves no key, queue entry or session behind (a lock taken at the moment
    of the cancel is released); a cancelled ``release`` still releases.
    """

    def __init__(
        self,
        key: str,
        *,
        client: Any = None,
        ttl: float = 15.0,
        lock_delay: float = 15.0,
        max_hold: float | None = None,
        value: bytes | str | None = None,
        fair: bool = False,
        session_name: str | None = None,
        session: AsyncSession | None = None,
    ) -> None:
        super().__init__(
            key,
            client=client,
            ttl=ttl,
            lock_delay=lock_delay,
            max_hold=max_hold,
            value=value,
            fair=fair,
            session_name=session_name,
            session=session,
        )
        self._local = asyncio.Lock()
        self._guard: AsyncGuard | None = None

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock; ``True`` when taken, ``False`` after ``timeout`` seconds (``None`` or
        ``-1``: as long as it takes; ``blocking=False``: one attempt)."""
        self._check_pid()
        wait = timeout_arg(blocking, timeout)
        start = time.monotonic()
        if wait is None:
            await self._local.acquire()
        else:
            try:
                await asyncio.wait_for(self._local.acquire(), wait if wait > 0 else 0.001)
            except asyncio.TimeoutError:
                return False
        try:
            left = None if wait is None else max(0.0, wait - (time.monotonic() - start))
            held = await self._native.acquire_async(left)
        except BaseException:
            self._local.release()
            raise
        if held is None:
            self._local.release()
            return False
        self._guard = AsyncGuard(held, self)
        return True

    async def release(self) -> None:
        """Release the lock; cancelling the caller does not stop the release."""
        self._check_pid()
        guard = self._guard
        if guard is None:
            raise NotHeld(f"release of lock {self.key!r}, which this object does not hold", key=self.key)
        self._guard = None
        self._local.release()
        await guard.release()

    def hold(self, timeout: float | None = None, *, blocking: bool = True) -> _AsyncHolding:
        """``async with lock.hold(timeout=5.0) as guard:`` (see :meth:`Lock.hold`)."""
        timeout_arg(blocking, timeout)
        return _AsyncHolding(self, blocking, timeout)

    async def __aenter__(self) -> AsyncGuard:
        if not await self.acquire():
            raise NotAcquired(f"lock {self.key!r} not acquired", key=self.key)
        assert self._guard is not None
        return self._guard

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        guard = self._guard
        was_lost = guard is not None and guard.lost
        await self.release()
        if was_lost and exc_type is None:
            from ._errors import LockLost

            raise LockLost(f"lock {self.key!r} was lost inside the async with block", key=self.key)

    @property
    def is_held(self) -> bool:
        """As :attr:`Lock.is_held`."""
        g = self._guard
        return g is not None and g.is_held

    @property
    def lost(self) -> bool:
        """As :attr:`Lock.lost`."""
        g = self._guard
        return g is not None and g.lost

    @property
    def guard(self) -> AsyncGuard | None:
        """The guard of the current hold, if any."""
        return self._guard

    @property
    def fencing_token(self) -> int | None:
        """As :attr:`Lock.fencing_token`."""
        g = self._guard
        return g.fencing_token if g is not None and g.is_held else None

    async def locked(self) -> bool:
        """Whether anyone holds the key now (asks Consul)."""
        return await self.holder() is not None

    async def holder(self) -> Holder | None:
        """Who holds the key now (asks Consul), or ``None``."""
        self._check_pid()
        return Holder._from(await self._native.holder_async())


class _AsyncHolding:
    __slots__ = ("_blocking", "_lock", "_timeout")

    def __init__(self, lock: AsyncLock, blocking: bool, timeout: float | None) -> None:
        self._lock, self._blocking, self._timeout = lock, blocking, timeout

    async def __aenter__(self) -> AsyncGuard:
        if not await self._lock.acquire(self._blocking, self._timeout):
            raise NotAcquired(f"lock {self._lock.key!r} not acquired", key=self._lock.key)
        guard = self._lock.guard
        assert guard is not None
        return guard

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._lock.__aexit__(exc_type, exc, tb)
