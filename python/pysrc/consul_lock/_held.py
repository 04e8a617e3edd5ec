"""What a held lock, permit or leadership looks like from Python: the guard of ``with lock.hold()``
and its async twin. A guard is a context manager: leaving the block releases, and raises
:class:`LockLost` when the lock was lost inside it (unless an exception is already propagating)."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

from . import _native
from ._errors import LockLost


@dataclass(frozen=True)
class HolderInfo:
    """The holder JSON consul_lock writes into a key by default."""

    hostname: str | None
    pid: int | None
    acquired_at_unix_ms: int | None
    session_name: str | None
    crate_version: str | None


@dataclass(frozen=True)
class Holder:
    """Who holds a key: the session, Consul's indexes (``modify_index`` is the holder's fencing
    token), the raw value and, when it is consul_lock's holder JSON, what it says."""

    session_id: str
    lock_index: int
    modify_index: int
    value: bytes
    info: HolderInfo | None

    @staticmethod
    def _from(d: dict[str, Any] | None) -> Holder | None:
        if d is None:
            return None
        info = d["info"]
        return Holder(
            session_id=d["session_id"],
            lock_index=d["lock_index"],
            modify_index=d["modify_index"],
            value=d["value"],
            info=HolderInfo(**info) if info is not None else None,
        )


class _Base:
    __slots__ = ("_held",)

    _held: _native.Held

    def __init__(self, held: _native.Held) -> None:
        self._held = held

    @property
    def key(self) -> str:
        """The key (a semaphore's prefix for a permit)."""
        return self._held.key

    @property
    def session_id(self) -> str:
        """The Consul session that holds it."""
        return self._held.session_id

    @property
    def is_held(self) -> bool:
        """``True`` until released or known lost. No request."""
        return self._held.held

    @property
    def lost(self) -> bool:
        """``True`` once known lost while not released by us: the session's renewal was refused,
        the key watch saw it deleted or taken, ``max_hold`` ran out, or the lease deadline (last
        renewal + TTL) passed. No request."""
        return self._held.lost

    @property
    def released(self) -> bool:
        """``True`` once released by us."""
        return self._held.released

    def ensure_held(self) -> None:
        """Raise :class:`LockLost` unless still held. No request."""
        if not self._held.held:
            what = "released" if self._held.released else "lost"
            raise LockLost(f"{self._kind} {self.key!r} is {what}", key=self.key)

    _kind = "lock"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._held!r}>"


class _SyncBase(_Base):
    __slots__ = ()

    def release(self) -> None:
        """Release it (owner-checked; a lost one is cleaned up). Idempotent."""
        self._held.release()

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until it is known lost (``True``), or released or ``timeout`` seconds passed
        (``False``). Starts a watch of the key. The GIL is released; Ctrl-C interrupts."""
        return self._held.wait_lost(timeout)

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        was_lost = self._held.lost
        self.release()
        if was_lost and exc_type is None:
            raise LockLost(f"{self._kind} {self.key!r} was lost inside the with block", key=self.key)


class _AsyncBase(_Base):
    __slots__ = ()

    async def release(self) -> None:
        """Release it. Cancelling the caller does not stop the release."""
        await self._held.release_async()

    async def wait_lost(self) -> bool:
        """Wait until it is known lost (``True``) or released (``False``); use ``asyncio.timeout``
        to bound it."""
        return await self._held.wait_lost_async()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        was_lost = self._held.lost
        await self.release()
        if was_lost and exc_type is None:
            raise LockLost(f"{self._kind} {self.key!r} was lost inside the async with block", key=self.key)


class Guard(_SyncBase):
    """A held lock: ``fencing_token`` to pass to what you protect, ``lost``, ``ensure_held()``,
    ``wait_lost()``, ``release()`` (the same as releasing the :class:`Lock` that gave it)."""

    __slots__ = ("_owner",)

    def __init__(self, held: _native.Held, owner: Any = None) -> None:
        super().__init__(held)
        self._owner = owner

    def release(self) -> None:
        owner = self._owner
        if owner is not None and owner._guard is self:
            owner.release()
        else:
            self._held.release()

    @property
    def fencing_token(self) -> int:
        """The ModifyIndex of the write that took the key: strictly increasing across successive
        holders of the key within one Consul cluster's life."""
        return self._held.token


class AsyncGuard(_AsyncBase):
    """:class:`Guard` for asyncio."""

    __slots__ = ("_owner",)

    def __init__(self, held: _native.Held, owner: Any = None) -> None:
        super().__init__(held)
        self._owner = owner

    async def release(self) -> None:
        owner = self._owner
        if owner is not None and owner._guard is self:
            await owner.release()
        else:
            await self._held.release_async()

    @property
    def fencing_token(self) -> int:
        """As :attr:`Guard.fencing_token`."""
        return self._held.token
