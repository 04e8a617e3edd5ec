"""``Semaphore`` / ``AsyncSemaphore``: at most ``limit`` holders under a prefix, with Consul's
semaphore recipe (the layout of Go's ``api.Semaphore`` and ``consul lock -n``)."""

from __future__ import annotations

import os
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _native
from ._client import resolve
from ._errors import ForkedProcessError, InvalidConfig, NotAcquired, NotHeld
from ._held import _AsyncBase, _SyncBase
from ._util import key_arg, seconds_arg, timeout_arg, value_arg

if TYPE_CHECKING:
    from ._session import AsyncSession, Session


class Permit(_SyncBase):
    """A held semaphore slot; ``token`` is its fencing token."""

    __slots__ = ()
    _kind = "semaphore permit"

    @property
    def token(self) -> int:
        """The ModifyIndex of the write that admitted this holder."""
        return self._held.token


class AsyncPermit(_AsyncBase):
    """:class:`Permit` for asyncio."""

    __slots__ = ()
    _kind = "semaphore permit"

    @property
    def token(self) -> int:
        """As :attr:`Permit.token`."""
        return self._held.token


def _native_semaphore(
    prefix: str,
    limit: int,
    client: Any,
    session: Session | AsyncSession | None,
    ttl: float,
    lock_delay: float,
    value: bytes | str | None,
) -> _native.Semaphore:
    key_arg("prefix", prefix)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 2**32 - 1:
        raise InvalidConfig(f"limit must be an int >= 1, got {limit!r}")
    if session is not None:
        if client is not None:
            raise InvalidConfig("pass either client or session, not both")
        return _native.Semaphore(prefix, limit, session=session._native, value=value_arg(value))
    return _native.Semaphore(
        prefix,
        limit,
        client=resolve(client),
        ttl=seconds_arg("ttl", ttl, low=10.0, high=86400.0),
        lock_delay=seconds_arg("lock_delay", lock_delay, low=0.0, high=60.0),
        value=value_arg(value),
    )


class Semaphore:
    """``Semaphore(prefix, limit, *, client=None, ttl=15.0, lock_delay=15.0, value=None)``.

    ``acquire(blocking=True, timeout=-1) -> bool`` / ``release()`` like ``threading.Semaphore``
    (one object holds at most one slot); ``with sem.hold(timeout=5.0) as permit:``.
    """

    def __init__(
        self,
        prefix: str,
        limit: int,
        *,
        client: Any = None,
        ttl: float = 15.0,
        lock_delay: float = 15.0,
        value: bytes | str | None = None,
        session: Session | None = None,
    ) -> None:
        self._native = _native_semaphore(prefix, limit, client, session, ttl, lock_delay, value)
        self._permit: Permit | None = None
        self._pid = os.getpid()

    @property
    def prefix(self) -> str:
        return self._native.prefix

    @property
    def limit(self) -> int:
        return self._native.limit

    def _check(self) -> None:
        if self._pid != os.getpid():
            raise ForkedProcessError(
                "this Semaphore was created in the parent process; create a new one here"
            )

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take a slot; ``False`` when none was free until the timeout."""
        self._check()
        wait = timeout_arg(blocking, timeout)
        if self._permit is not None and not self._permit.released:
            from ._errors import AlreadyHeld

            raise AlreadyHeld(
                f"this Semaphore object already holds a slot of {self.prefix!r}", key=self.prefix
            )
        held = self._native.acquire(wait)
        if held is None:
            return False
        self._permit = Permit(held)
        return True

    def release(self) -> None:
        """Give the slot back. ``NotHeld`` when this object holds none."""
        self._check()
        p, self._permit = self._permit, None
        if p is None:
            raise NotHeld(
                f"release of semaphore {self.prefix!r}, of which this object holds no slot", key=self.prefix
            )
        p.release()

    def hold(self, timeout: float = -1, *, blocking: bool = True) -> Permit:
        """``with sem.hold(timeout=5.0) as permit:`` (``NotAcquired`` after the timeout)."""
        self._check()
        held = self._native.acquire(timeout_arg(blocking, timeout), fail_hard=True)
        if held is None:
            raise NotAcquired(f"no slot of semaphore {self.prefix!r}", key=self.prefix)
        return Permit(held)

    @property
    def permit(self) -> Permit | None:
        return self._permit

    def __enter__(self) -> Permit:
        if not self.acquire():
            raise NotAcquired(f"no slot of semaphore {self.prefix!r}", key=self.prefix)
        assert self._permit is not None
        return self._permit

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        p = self._permit
        self._permit = None
        if p is not None:
            p.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"<Semaphore {self.prefix!r} limit={self.limit}>"


class AsyncSemaphore:
    """:class:`Semaphore` for asyncio."""

    def __init__(
        self,
        prefix: str,
        limit: int,
        *,
        client: Any = None,
        ttl: float = 15.0,
        lock_delay: float = 15.0,
        value: bytes | str | None = None,
        session: AsyncSession | None = None,
    ) -> None:
        self._native = _native_semaphore(prefix, limit, client, session, ttl, lock_delay, value)
        self._permit: AsyncPermit | None = None

    @property
    def prefix(self) -> str:
        return self._native.prefix

    @property
    def limit(self) -> int:
        return self._native.limit

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a slot; ``False`` when none was free until the timeout."""
        held = await self._native.acquire_async(timeout_arg(blocking, timeout))
        if held is None:
            return False
        self._permit = AsyncPermit(held)
        return True

    async def release(self) -> None:
        """Give the slot back."""
        p, self._permit = self._permit, None
        if p is None:
            raise NotHeld(
                f"release of semaphore {self.prefix!r}, of which this object holds no slot", key=self.prefix
            )
        await p.release()

    async def hold(self, timeout: float | None = None, *, blocking: bool = True) -> AsyncPermit:
        """``async with await sem.hold(timeout=5.0) as permit:``."""
        held = await self._native.acquire_async(timeout_arg(blocking, timeout), fail_hard=True)
        if held is None:
            raise NotAcquired(f"no slot of semaphore {self.prefix!r}", key=self.prefix)
        return AsyncPermit(held)

    async def __aenter__(self) -> AsyncPermit:
        if not await self.acquire():
            raise NotAcquired(f"no slot of semaphore {self.prefix!r}", key=self.prefix)
        assert self._permit is not None
        return self._permit

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        p = self._permit
        self._permit = None
        if p is not None:
            await p.__aexit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"<AsyncSemaphore {self.prefix!r} limit={self.limit}>"
