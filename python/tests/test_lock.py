"""Lock: threading semantics, mutual exclusion across threads and processes, fencing tokens,
lost-lock detection, argument checks."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time

import consul_lock
import pytest
from consul_dev import ConsulDev
from consul_lock import Client, Lock, LockLost, NotAcquired


def test_acquire_release_and_threading_rules(agent: ConsulDev, client: Client, prefix: str) -> None:
    key = f"{prefix}/basic"
    a, b = Lock(key, client=client), Lock(key, client=client)
    assert a.acquire() is True
    assert a.is_held
    assert a.fencing_token is not None
    assert a.locked() is True
    holder = a.holder()
    assert holder is not None
    assert holder.modify_index == a.fencing_token
    assert holder.info is not None
    assert holder.info.pid is not None
    assert b.acquire(blocking=False) is False
    t0 = time.monotonic()
    assert b.acquire(timeout=0.3) is False
    assert 0.25 < time.monotonic() - t0 < 3
    with pytest.raises(ValueError, match="non-blocking"):
        b.acquire(blocking=False, timeout=1)
    with pytest.raises(ValueError, match="non-negative"):
        b.acquire(timeout=-2)
    with pytest.raises(consul_lock.AlreadyHeld):
        a.acquire()
    a.release()
    assert not a.is_held
    assert a.fencing_token is None
    with pytest.raises(consul_lock.NotHeld):
        a.release()
    assert a.locked() is False
    assert b.acquire(timeout=5) is True
    b.release()
    agent.wait_until("no session left", lambda: not agent.sessions_named(key))


def test_with_and_hold(agent: ConsulDev, client: Client, prefix: str) -> None:
    key = f"{prefix}/with"
    lock = Lock(key, client=client)
    with lock as guard:
        assert agent.kv(key) is not None
        assert guard.fencing_token == agent.kv(key)["ModifyIndex"]  # type: ignore[index]
        guard.ensure_held()
        assert not guard.lost
    assert agent.kv(key) is None
    other = Lock(key, client=client)
    with lock.hold(timeout=5.0) as guard:
        assert guard.is_held
        with pytest.raises(NotAcquired) as err, other.hold(timeout=0.2):
            pass
        assert isinstance(err.value, TimeoutError)
        assert err.value.key == key
    assert agent.kv(key) is None
    # Releasing through the guard is releasing the lock: the object is free again, in any thread.
    assert lock.acquire(timeout=5)
    current = lock.guard
    assert current is not None
    current.release()
    assert not lock.is_held
    assert lock.guard is None
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(lock.acquire(timeout=5)))
    t.start()
    t.join()
    assert got == [True]
    lock.release()


def test_bad_input_is_refused_before_any_request(client: Client) -> None:
    for bad in ["", "/lead", "a/../b", "a\x00b"]:
        with pytest.raises(consul_lock.InvalidConfig):
            Lock(bad, client=client)
    with pytest.raises(consul_lock.InvalidConfig, match="ttl"):
        Lock("k", client=client, ttl=5)
    with pytest.raises(consul_lock.InvalidConfig, match="lock_delay"):
        Lock("k", client=client, lock_delay=61)
    with pytest.raises(ValueError, match="max_hold"):
        Lock("k", client=client, max_hold=0)
    with pytest.raises(consul_lock.InvalidConfig):
        Lock("k", client=object())
    with pytest.raises(consul_lock.InvalidConfig):
        Client("not a url at all://")
    # An address where nobody listens: a transport error (a ConnectionError), never False.
    dead = Client("http://127.0.0.1:1", request_timeout=1.0)
    with pytest.raises(consul_lock.TransportError) as err:
        Lock("k", client=dead).acquire(timeout=0.5)
    assert isinstance(err.value, ConnectionError)
    assert "127.0.0.1:1" in str(err.value)


def test_token_never_shows(agent: ConsulDev) -> None:
    c = Client(agent.addr, token="very-secret-token-1234")
    assert "very-secret" not in repr(c)
    dead = Client("http://127.0.0.1:1", token="very-secret-token-1234", request_timeout=0.5)
    with pytest.raises(consul_lock.TransportError) as err:
        Lock("k", client=dead).acquire(timeout=0.2)
    assert "very-secret" not in str(err.value)
    assert "very-secret" not in repr(err.value)


def test_eight_threads_never_overlap_and_tokens_increase(
    agent: ConsulDev, client: Client, prefix: str
) -> None:
    key = f"{prefix}/threads"
    inside = 0
    overlaps = 0
    tokens: list[int] = []
    mutex = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        nonlocal inside, overlaps
        lock = Lock(key, client=client)
        try:
            for _ in range(50):
                with lock as guard:
                    with mutex:
                        inside += 1
                        overlaps += inside > 1
                        tokens.append(guard.fencing_token)
                    time.sleep(0.0005)
                    with mutex:
                        inside -= 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert overlaps == 0
    assert len(tokens) == 400
    assert all(a < b for a, b in itertools.pairwise(tokens)), "tokens strictly increase"
    agent.wait_until("no session left", lambda: not agent.sessions_named(key))


def test_one_lock_object_shared_by_threads(client: Client, prefix: str) -> None:
    lock = Lock(f"{prefix}/shared-object", client=client)
    inside = 0
    overlaps = 0
    mutex = threading.Lock()

    def worker() -> None:
        nonlocal inside, overlaps
        for _ in range(10):
            with lock:
                with mutex:
                    inside += 1
                    overlaps += inside > 1
                with mutex:
                    inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == 0


def _process_worker(addr: str, key: str, n: int, log: str) -> None:
    lock = Lock(key, client=Client(addr))
    for _ in range(n):
        with lock as guard:
            with open(log, "a") as f:
                f.write(f"enter {guard.fencing_token}\n")
                f.flush()
            time.sleep(0.001)
            with open(log, "a") as f:
                f.write(f"exit {guard.fencing_token}\n")


def test_four_spawned_processes_never_overlap(agent: ConsulDev, prefix: str, tmp_path: object) -> None:
    key = f"{prefix}/procs"
    log = str(tmp_path) + "/log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_worker, args=(agent.addr, key, 25, log)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with open(log) as f:
        lines = f.read().split()
    events = list(zip(lines[0::2], (int(t) for t in lines[1::2]), strict=True))
    assert len(events) == 200
    # Strict alternation enter(t)/exit(t) means no two holders overlapped; tokens strictly increase.
    for i in range(0, 200, 2):
        assert events[i][0] == "enter"
        assert events[i + 1] == ("exit", events[i][1])
    entered = [t for e, t in events if e == "enter"]
    assert all(a < b for a, b in itertools.pairwise(entered))
    agent.wait_until("no session left", lambda: not agent.sessions_named(key))


def test_lock_lost_when_session_destroyed_from_outside(agent: ConsulDev, client: Client, prefix: str) -> None:
    key = f"{prefix}/lost"
    lock = Lock(key, client=client, lock_delay=0)
    with pytest.raises(LockLost), lock.hold(timeout=5) as guard:
        agent.put(f"/v1/session/destroy/{guard.session_id}")
        assert guard.wait_lost(timeout=10) is True
        assert guard.lost
        assert not guard.is_held
        with pytest.raises(LockLost):
            guard.ensure_held()
    assert not lock.is_held
    agent.wait_until("key gone", lambda: agent.kv(key) is None)
    # The lock can be taken again.
    assert lock.acquire(timeout=20)
    lock.release()


def test_max_hold_ends_the_hold(client: Client, prefix: str) -> None:
    lock = Lock(f"{prefix}/max-hold", client=client, max_hold=0.3)
    with pytest.raises(LockLost), lock as guard:
        assert guard.wait_lost(timeout=5) is True
