"""python-consul-lock's README examples, verbatim, with py-consul's ``consul.Consul()``."""

from __future__ import annotations

import time

import consul
import consul_lock
import pytest
from consul_dev import ConsulDev
from consul_lock import EphemeralLock


def test_seed_readme_examples_verbatim(agent: ConsulDev, capsys: pytest.CaptureFixture[str]) -> None:
    # The three examples of python-consul-lock's README, unchanged but for Python 3's print().
    # Setup `consul_lock` defaults
    consul_client = consul.Consul()
    consul_lock.defaults.consul_client = consul_client

    # Creating and holding a lock with as a context manager
    ephemeral_lock = EphemeralLock('my/special/key', acquire_timeout_ms=500)  # fmt: skip
    with ephemeral_lock.hold():
        # do dangerous stuff here
        print('here be dragons')  # fmt: skip
        held = agent.kv("locks/ephemeral/my/special/key")
        assert held is not None, "held under the seed's key pattern"
        assert held.get("Session")
        assert EphemeralLock("my/special/key").acquire(fail_hard=False) is False
        with pytest.raises(consul_lock.LockAcquisitionException):
            EphemeralLock("my/special/key").acquire()
    assert agent.kv("locks/ephemeral/my/special/key") is None, "released on leaving the block"

    # Creating a lock and acquiring and releasing it explicitly
    ephemeral_lock = EphemeralLock('my/special/key', acquire_timeout_ms=500)  # fmt: skip
    try:
        ephemeral_lock.acquire()
        # do dangerous stuff here
        print('here be dragons')  # fmt: skip
        assert agent.kv("locks/ephemeral/my/special/key") is not None
    finally:
        ephemeral_lock.release()
    assert agent.kv("locks/ephemeral/my/special/key") is None

    # Reacting to `acquire` attempt
    ephemeral_lock = EphemeralLock('my/special/key', acquire_timeout_ms=500)  # fmt: skip
    try:
        was_acquired = ephemeral_lock.acquire(fail_hard=False)
        if was_acquired:
            # do dangerous stuff here
            print('here be dragons')  # fmt: skip
        else:
            print('someone else has the lock :\\ try again later')  # fmt: skip
    finally:
        ephemeral_lock.release()

    assert capsys.readouterr().out == "here be dragons\n" * 3
    # The seed's object was single use; ours can be acquired again (returns True, then bool).
    assert ephemeral_lock.acquire() is True
    assert ephemeral_lock.release() is True
    assert ephemeral_lock.release() is False, "nothing held any more"
    agent.wait_until("no session left", lambda: not agent.sessions_named("my/special/key"))
    # Someone else holds it: the third example's else branch, and the lock waits 500 ms for it.
    other = EphemeralLock("my/special/key")
    assert other.acquire() is True
    waiting = EphemeralLock("my/special/key", acquire_timeout_ms=500)
    t0 = time.monotonic()
    assert waiting.acquire(fail_hard=False) is False
    assert 0.45 < time.monotonic() - t0 < 3.0
    assert other.release() is True


def test_seed_defaults_and_exceptions(agent: ConsulDev) -> None:
    d = consul_lock.defaults
    assert (d.acquire_timeout_ms, d.lock_timeout_seconds, d.lock_key_pattern) == (
        0,
        180,
        "locks/ephemeral/%s",
    )
    assert issubclass(consul_lock.LockAcquisitionException, consul_lock.NotAcquired)
    assert issubclass(consul_lock.LockAcquisitionException, consul.ConsulException)
    assert issubclass(consul_lock.LockAcquisitionException, TimeoutError)
    with pytest.raises(consul_lock.InvalidConfig):
        EphemeralLock("k", lock_timeout_seconds=5)
    with pytest.raises(ValueError, match="key is required"):
        EphemeralLock("")


def test_consul_client_settings_are_read(agent: ConsulDev) -> None:
    c = consul.Consul(host="127.0.0.1", port=agent.port, token="s3cret-token", dc="dc1")
    made = consul_lock._client.from_consul(c)
    assert made.address.rstrip("/") == agent.addr
    assert "s3cret" not in repr(made), "the token never shows in a repr"
    lock = EphemeralLock("token/check", consul_client=c)
    # The dev agent has no ACLs: the token is sent and ignored; the lock works.
    assert lock.acquire() is True
    assert lock.release() is True
