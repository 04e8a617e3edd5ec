"""Argument checks shared by the primitives (done before any request)."""

from __future__ import annotations

import math

from ._errors import InvalidConfig


def timeout_arg(blocking: bool, timeout: float | None) -> float | None:
    """threading's ``acquire(blocking, timeout)`` rules → seconds to wait (``None``: for ever)."""
    if timeout is None:
        timeout = -1
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise InvalidConfig(f"timeout must be a number of seconds, got {type(timeout).__name__}")
    if not blocking:
        if timeout != -1:
            raise InvalidConfig("can't specify a timeout for a non-blocking call")
        return 0.0
    if timeout == -1:
        return None
    if timeout < 0 or math.isnan(timeout):
        raise InvalidConfig("timeout value must be a non-negative number of seconds, or -1 (wait for ever)")
    return None if math.isinf(timeout) else float(timeout)


def seconds_arg(
    name: str, value: float | None, *, low: float | None = None, high: float | None = None
) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidConfig(f"{name} must be a finite number of seconds, got {value!r}")
    if low is not None and value < low:
        raise InvalidConfig(f"{name} must be at least {low:g} s, got {value:g}")
    if high is not None and value > high:
        raise InvalidConfig(f"{name} must be at most {high:g} s, got {value:g}")
    return float(value)


def key_arg(name: str, key: str) -> str:
    if not isinstance(key, str):
        raise InvalidConfig(f"{name} must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidConfig(f"{name} must not be empty")
    if key.startswith("/"):
        raise InvalidConfig(f"{name} {key!r} must not start with '/'")
    if any(part == ".." for part in key.split("/")):
        raise InvalidConfig(f"{name} {key!r} must not have '..' segments")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in key):
        raise InvalidConfig(f"{name} {key!r} must not contain control characters")
    return key


def value_arg(value: bytes | str | None) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidConfig(f"value must be bytes or str, got {type(value).__name__}")
