"""Distributed locks, semaphores and leader election on HashiCorp Consul, with a Rust core.

* ``Lock`` / ``AsyncLock``: ``with lock:``, ``acquire(blocking=True, timeout=-1)``, ``release()``,
  ``with lock.hold(timeout=5.0) as guard:`` with ``guard.fencing_token`` and lost-lock detection.
* ``Semaphore``, ``Election``, ``Session`` and their ``Async`` twins.
* ``EphemeralLock``, ``defaults``, ``LockAcquisitionException``: python-consul-lock's API.

Sessions are renewed on Rust threads (never starved by the GIL); every wait releases the GIL and
Ctrl-C interrupts it; objects used in a forked child raise ``ForkedProcessError`` and never touch
the parent's locks; locks still held at interpreter exit are released (within 2 s).
"""

from __future__ import annotations

import atexit

from . import defaults
from ._compat import ConsulLockException, EphemeralLock, LockAcquisitionException
from ._election import AsyncElection, AsyncLeadership, Election, Leader, Leadership
from ._errors import (
    AlreadyHeld,
    Conflict,
    ConsulError,
    DecodeError,
    ForkedProcessError,
    InvalidConfig,
    LockError,
    LockLost,
    NotAcquired,
    NotHeld,
    PermissionDenied,
    TransportError,
)
from ._held import AsyncGuard, Guard, Holder, HolderInfo
from ._lock import AsyncLock, Lock
from ._native import Client, __version__
from ._native import _at_exit as _native_at_exit
from ._semaphore import AsyncPermit, AsyncSemaphore, Permit, Semaphore
from ._session import AsyncSession, Session

atexit.register(_native_at_exit, 2.0)

__all__ = [
    "AlreadyHeld",
    "AsyncElection",
    "AsyncGuard",
    "AsyncLeadership",
    "AsyncLock",
    "AsyncPermit",
    "AsyncSemaphore",
    "AsyncSession",
    "Client",
    "Conflict",
    "ConsulError",
    "ConsulLockException",
    "DecodeError",
    "Election",
    "EphemeralLock",
    "ForkedProcessError",
    "Guard",
    "Holder",
    "HolderInfo",
    "InvalidConfig",
    "Leader",
    "Leadership",
    "Lock",
    "LockAcquisitionException",
    "LockError",
    "LockLost",
    "NotAcquired",
    "NotHeld",
    "PermissionDenied",
    "Permit",
    "Semaphore",
    "Session",
    "TransportError",
    "__version__",
    "defaults",
]
