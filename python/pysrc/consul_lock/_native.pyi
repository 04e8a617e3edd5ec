"""The Rust core of consul_lock (``consul_lock._native``). Private: use the ``consul_lock`` API."""

import asyncio
from typing import Any, final

__version__: str
__all__ = [
    "Client",
    "Election",
    "Held",
    "Lock",
    "Observer",
    "Semaphore",
    "Session",
    "__version__",
    "_at_exit",
]

@final
class Client:
    def __new__(
        cls,
        address: str | None = None,
        *,
        token: str | None = None,
        token_file: str | None = None,
        datacenter: str | None = None,
        namespace: str | None = None,
        https: bool | None = None,
        ca_file: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        tls_server_name: str | None = None,
        verify: bool = True,
        request_timeout: float | None = None,
    ) -> Client: ...
    @staticmethod
    def from_env() -> Client: ...
    @property
    def address(self) -> str: ...
    def holder(self, key: str) -> dict[str, Any] | None: ...
    def holder_async(self, key: str) -> asyncio.Future[dict[str, Any] | None]: ...

@final
class Held:
    @property
    def key(self) -> str: ...
    @property
    def session_id(self) -> str: ...
    @property
    def token(self) -> int: ...
    @property
    def held(self) -> bool: ...
    @property
    def lost(self) -> bool: ...
    @property
    def released(self) -> bool: ...
    def release(self) -> bool: ...
    def release_async(self) -> asyncio.Future[bool]: ...
    def wait_lost(self, timeout: float | None = None) -> bool: ...
    def wait_lost_async(self) -> asyncio.Future[bool]: ...
    def proclaim(self, value: bytes) -> None: ...
    def proclaim_async(self, value: bytes) -> asyncio.Future[None]: ...

@final
class Session:
    @staticmethod
    def create(client: Client, ttl: float, lock_delay: float) -> Session: ...
    @staticmethod
    def create_async(client: Client, ttl: float, lock_delay: float) -> asyncio.Future[Session | None]: ...
    @property
    def id(self) -> str: ...
    @property
    def client(self) -> Client: ...
    @property
    def alive(self) -> bool: ...
    def destroy(self) -> None: ...
    def destroy_async(self) -> asyncio.Future[None]: ...
    def wait_lost(self, timeout: float | None = None) -> bool: ...

@final
class Lock:
    def __new__(
        cls,
        key: str,
        *,
        client: Client | None = None,
        session: Session | None = None,
        ttl: float | None = None,
        lock_delay: float | None = None,
        max_hold: float | None = None,
        value: bytes | None = None,
        fair: bool = False,
        session_name: str | None = None,
    ) -> Lock: ...
    @property
    def key(self) -> str: ...
    def acquire(self, timeout: float | None, fail_hard: bool = False) -> Held | None: ...
    def acquire_async(
        self, timeout: float | None, fail_hard: bool = False
    ) -> asyncio.Future[Held | None]: ...
    def holder(self) -> dict[str, Any] | None: ...
    def holder_async(self) -> asyncio.Future[dict[str, Any] | None]: ...

@final
class Semaphore:
    def __new__(
        cls,
        prefix: str,
        limit: int,
        *,
        client: Client | None = None,
        session: Session | None = None,
        ttl: float | None = None,
        lock_delay: float | None = None,
        value: bytes | None = None,
        session_name: str | None = None,
    ) -> Semaphore: ...
    @property
    def prefix(self) -> str: ...
    @property
    def limit(self) -> int: ...
    def acquire(self, timeout: float | None, fail_hard: bool = False) -> Held | None: ...
    def acquire_async(
        self, timeout: float | None, fail_hard: bool = False
    ) -> asyncio.Future[Held | None]: ...

@final
class Observer:
    def next(self) -> tuple[str, bytes, int] | None: ...
    def next_async(self) -> asyncio.Future[tuple[str, bytes, int] | None]: ...

@final
class Election:
    def __new__(
        cls,
        key: str,
        *,
        client: Client | None = None,
        session: Session | None = None,
        ttl: float | None = None,
        lock_delay: float | None = None,
        session_name: str | None = None,
    ) -> Election: ...
    @property
    def key(self) -> str: ...
    def campaign(self, value: bytes, timeout: float | None, fail_hard: bool = False) -> Held | None: ...
    def campaign_async(
        self, value: bytes, timeout: float | None, fail_hard: bool = False
    ) -> asyncio.Future[Held | None]: ...
    def leader(self) -> tuple[str, bytes, int] | None: ...
    def leader_async(self) -> asyncio.Future[tuple[str, bytes, int] | None]: ...
    def observe(self) -> Observer: ...

def _at_exit(timeout: float = 2.0) -> None: ...
