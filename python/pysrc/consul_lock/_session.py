"""``Session`` / ``AsyncSession``: one Consul session, renewed once for many locks, semaphores and
elections. A cycle on a shared session costs two Consul writes (acquire, owner-checked delete).
Losing the session loses everything taken through it, and each guard reports it."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

from . import _native
from ._client import resolve
from ._errors import ForkedProcessError
from ._util import seconds_arg


def _args(client: Any, ttl: float, lock_delay: float) -> tuple[_native.Client, float, float]:
    t = seconds_arg("ttl", ttl, low=10.0, high=86400.0)
    d = seconds_arg("lock_delay", lock_delay, low=0.0, high=60.0)
    assert t is not None
    assert d is not None
    return resolve(client), t, d


class Session:
    """``with Session(client=None, ttl=15.0, lock_delay=15.0) as s:`` creates the session (and
    starts renewing it); leaving the block destroys it. ``s.lock(key)``, ``s.semaphore(prefix,
    limit)``, ``s.election(key)`` make primitives bound to it."""

    def __init__(self, client: Any = None, *, ttl: float = 15.0, lock_delay: float = 15.0) -> None:
        self._args = _args(client, ttl, lock_delay)
        self._session: _native.Session | None = None
        self._pid = os.getpid()

    @property
    def _native(self) -> _native.Session:
        if self._pid != os.getpid():
            raise ForkedProcessError("this Session was created in the parent process; create a new one here")
        if self._session is None:
            self.create()
        assert self._session is not None
        return self._session

    def create(self) -> Session:
        """Create the Consul session now (``with`` and first use do it too)."""
        if self._session is None:
            self._session = _native.Session.create(*self._args)
        return self

    @property
    def id(self) -> str:
        """The Consul session ID."""
        return self._native.id

    @property
    def alive(self) -> bool:
        """``False`` once destroyed or known lost. No request."""
        return self._session is not None and self._session.alive

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until the session is lost (``True``) or ``timeout`` passed (``False``)."""
        return self._native.wait_lost(timeout)

    def destroy(self) -> None:
        """Destroy the session: every lock taken through it is released."""
        if self._session is not None:
            self._session.destroy()

    def lock(self, key: str, **kwargs: Any) -> Lock:
        """A :class:`Lock` bound to this session (``max_hold``, ``value``, ``fair`` allowed)."""
        return Lock(key, session=self, **kwargs)

    def semaphore(self, prefix: str, limit: int, **kwargs: Any) -> Semaphore:
        """A :class:`Semaphore` bound to this session."""
        return Semaphore(prefix, limit, session=self, **kwargs)

    def election(self, key: str) -> Election:
        """An :class:`Election` whose campaigns go through this session."""
        return Election(key, session=self)

    def __enter__(self) -> Session:
        return self.create()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()

    def __repr__(self) -> str:
        sid = self._session.id if self._session is not None else "not created"
        return f"<Session {sid}>"


class AsyncSession:
    """:class:`Session` for asyncio: ``async with AsyncSession() as s:``."""

    def __init__(self, client: Any = None, *, ttl: float = 15.0, lock_delay: float = 15.0) -> None:
        self._args = _args(client, ttl, lock_delay)
        self._session: _native.Session | None = None
        self._pid = os.getpid()

    @property
    def _native(self) -> _native.Session:
        if self._pid != os.getpid():
            raise ForkedProcessError(
                "this AsyncSession was created in the parent process; create a new one here"
            )
        if self._session is None:
            raise RuntimeError(
                "the AsyncSession is not created yet: `await session.create()` or `async with`"
            )
        return self._session

    async def create(self) -> AsyncSession:
        """Create the Consul session."""
        if self._session is None:
            made = await _native.Session.create_async(*self._args)
            assert made is not None
            self._session = made
        return self

    @property
    def id(self) -> str:
        """The Consul session ID."""
        return self._native.id

    @property
    def alive(self) -> bool:
        """``False`` once destroyed or known lost. No request."""
        return self._session is not None and self._session.alive

    async def destroy(self) -> None:
        """Destroy the session; cancelling the caller does not stop it."""
        if self._session is not None:
            await self._session.destroy_async()

    def lock(self, key: str, **kwargs: Any) -> AsyncLock:
        """An :class:`AsyncLock` bound to this session."""
        return AsyncLock(key, session=self, **kwargs)

    def semaphore(self, prefix: str, limit: int, **kwargs: Any) -> AsyncSemaphore:
        """An :class:`AsyncSemaphore` bound to this session."""
        return AsyncSemaphore(prefix, limit, session=self, **kwargs)

    def election(self, key: str) -> AsyncElection:
        """An :class:`AsyncElection` bound to this session."""
        return AsyncElection(key, session=self)

    async def __aenter__(self) -> AsyncSession:
        return await self.create()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.destroy()

    def __repr__(self) -> str:
        sid = self._session.id if self._session is not None else "not created"
        return f"<AsyncSession {sid}>"


from ._election import AsyncElection, Election  # noqa: E402
from ._lock import AsyncLock, Lock  # noqa: E402
from ._semaphore import AsyncSemaphore, Semaphore  # noqa: E402
