"""``Election`` / ``AsyncElection``: leader election on one key (campaign, proclaim, resign,
leader, observe). A campaign is a fair lock acquire that carries the candidate's value; the term is
the winning write's index (a fencing token for the leader)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _native
from ._client import resolve
from ._errors import InvalidConfig, NotAcquired
from ._held import _AsyncBase, _SyncBase
from ._util import key_arg, seconds_arg, timeout_arg, value_arg

if TYPE_CHECKING:
    from ._session import AsyncSession, Session


@dataclass(frozen=True)
class Leader:
    """Who leads: the leader's session, the value it proclaimed, its term."""

    session_id: str
    value: bytes
    term: int


def _leader(t: tuple[str, bytes, int] | None) -> Leader | None:
    return None if t is None else Leader(*t)


class Leadership(_SyncBase):
    """A won election: ``term``, ``is_leader``, ``lost``, ``proclaim(value)``, ``resign()``,
    ``wait_lost()``; leaving its ``with`` block resigns."""

    __slots__ = ()
    _kind = "leadership"

    @property
    def term(self) -> int:
        return self._held.token

    @property
    def is_leader(self) -> bool:
        return self._held.held

    def proclaim(self, value: bytes | str) -> None:
        """Publish a new value under the election key (``LockLost`` if no longer leader)."""
        v = value_arg(value)
        assert v is not None
        self._held.proclaim(v)

    def resign(self) -> None:
        """Step down (the next candidate takes over)."""
        self.release()


class AsyncLeadership(_AsyncBase):
    """:class:`Leadership` for asyncio."""

    __slots__ = ()
    _kind = "leadership"

    @property
    def term(self) -> int:
        return self._held.token

    @property
    def is_leader(self) -> bool:
        return self._held.held

    async def proclaim(self, value: bytes | str) -> None:
        v = value_arg(value)
        assert v is not None
        await self._held.proclaim_async(v)

    async def resign(self) -> None:
        await self.release()


def _native_election(
    key: str, client: Any, session: Session | AsyncSession | None, ttl: float | None, lock_delay: float | None
) -> _native.Election:
    key_arg("key", key)
    if session is not None:
        if client is not None:
            raise InvalidConfig("pass either client or session, not both")
        return _native.Election(key, session=session._native)
    return _native.Election(
        key,
        client=resolve(client),
        ttl=seconds_arg("ttl", ttl, low=10.0, high=86400.0),
        lock_delay=seconds_arg("lock_delay", lock_delay, low=0.0, high=60.0),
    )


class Election:
    """``Election(key, *, client=None, ttl=15.0, lock_delay=15.0)``."""

    def __init__(
        self,
        key: str,
        *,
        client: Any = None,
        ttl: float | None = None,
        lock_delay: float | None = None,
        session: Session | None = None,
    ) -> None:
        self._native = _native_election(key, client, session, ttl, lock_delay)

    @property
    def key(self) -> str:
        return self._native.key

    def campaign(self, value: bytes | str = b"", timeout: float = -1, *, blocking: bool = True) -> Leadership:
        """Become leader (waiting in line; ``NotAcquired`` after ``timeout``)."""
        v = value_arg(value)
        assert v is not None
        held = self._native.campaign(v, timeout_arg(blocking, timeout), fail_hard=True)
        if held is None:
            raise NotAcquired(f"election {self.key!r} not won", key=self.key)
        return Leadership(held)

    def leader(self) -> Leader | None:
        """The current leader, or ``None``."""
        return _leader(self._native.leader())

    def observe(self) -> Iterator[Leader | None]:
        """The leadership states: the current one first, then each change (``None``: nobody leads).
        Blocks between items with the GIL released."""
        obs = self._native.observe()
        while True:
            yield _leader(obs.next())

    def __repr__(self) -> str:
        return f"<Election {self.key!r}>"


class AsyncElection:
    """:class:`Election` for asyncio; ``async for leader in election.observe():``."""

    def __init__(
        self,
        key: str,
        *,
        client: Any = None,
        ttl: float | None = None,
        lock_delay: float | None = None,
        session: AsyncSession | None = None,
    ) -> None:
        self._native = _native_election(key, client, session, ttl, lock_delay)

    @property
    def key(self) -> str:
        return self._native.key

    async def campaign(self, value: bytes | str = b"", timeout: float | None = None) -> AsyncLeadership:
        v = value_arg(value)
        assert v is not None
        held = await self._native.campaign_async(v, timeout_arg(True, timeout), fail_hard=True)
        if held is None:
            raise NotAcquired(f"election {self.key!r} not won", key=self.key)
        return AsyncLeadership(held)

    async def leader(self) -> Leader | None:
        return _leader(await self._native.leader_async())

    async def observe(self) -> AsyncIterator[Leader | None]:
        obs = self._native.observe()
        while True:
            yield _leader(await obs.next_async())

    def __repr__(self) -> str:
        return f"<AsyncElection {self.key!r}>"
