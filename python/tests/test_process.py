"""Process-level behaviour: Ctrl-C (SIGINT) during a wait, os.fork(), release at interpreter exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from consul_dev import ConsulDev
from consul_lock import Client, ForkedProcessError, Lock


def child(code: str, agent: ConsulDev) -> subprocess.Popen[str]:
    # faulthandler: a child stopped by `finish` with SIGABRT prints every thread's Python stack.
    env = dict(os.environ, CONSUL_HTTP_ADDR=agent.addr, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(p: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """The child's output once it exits. A child still running after `timeout` seconds fails the
    test, and is stopped with what it was doing: the kernel's wait channel of each of its threads,
    then (SIGABRT) every thread's Python stack."""
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        threads = []
        for task in sorted(os.listdir(f"/proc/{p.pid}/task")):
            comm, wchan = (_read(f"/proc/{p.pid}/task/{task}/{f}") for f in ("comm", "wchan"))
            threads.append(f"{task} {comm} in {wchan or '(running)'}")
        p.send_signal(signal.SIGABRT)
        out, err = p.communicate()
        said = f"threads: {'; '.join(threads)}\nstdout: {out}\nstderr: {err}"
        raise AssertionError(f"the child still ran after {timeout} s\n{said}") from None


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def test_sigint_interrupts_a_wait_and_leaves_nothing(agent: ConsulDev, client: Client, prefix: str) -> None:
    key = f"{prefix}/sigint"
    holder = Lock(key, client=client)
    assert holder.acquire()
    mine = holder.guard.session_id if holder.guard else ""
    # Python turns SIGINT into KeyboardInterrupt only if SIGINT was not ignored when it started, and
    # a suite started in the background by a non-interactive shell (`cmd &`) inherits it ignored:
    # the child sets the handler an interactive Python has.
    p = child(
        f"""
        import signal
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import consul_lock
        lock = consul_lock.Lock({key!r})
        print("waiting", flush=True)
        try:
            lock.acquire()
        except KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
            raise
        """,
        agent,
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "waiting"
    # Wait until the child is really waiting: its session and queue entry are in Consul.
    agent.wait_until("the child waits", lambda: len(agent.sessions_named(key)) == 2 and agent.keys(key + "/"))
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = finish(p, 10)
    elapsed = time.monotonic() - t0
    assert "KeyboardInterrupt" in out
    assert "KeyboardInterrupt" in err
    assert p.returncode != 0
    assert elapsed < 1.0, f"the child took {elapsed:.2f} s to exit"
    # Nothing of the child's is left: only the holder's session, no queue entry.
    assert [s["ID"] for s in agent.sessions_named(key)] == [mine]
    assert agent.keys(key + "/") == []
    holder.release()


def test_fork_child_cannot_touch_the_parents_lock(agent: ConsulDev, client: Client, prefix: str) -> None:
    key = f"{prefix}/fork"
    lock = Lock(key, client=client)
    guard = lock.hold(timeout=5).__enter__()
    token = guard.fencing_token
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what happens, never run pytest's code
        results = []
        try:
            for attempt in (
                lock.release,
                guard.release,
                lambda: guard.is_held,
                lambda: lock.acquire(timeout=0),
            ):
                try:
                    attempt()
                    results.append("no error")
                except ForkedProcessError:
                    results.append("ForkedProcessError")
                except BaseException as e:
                    results.append(f"{type(e).__name__}: {e}")
            # Dropping the inherited objects must not release anything.
            del lock, guard
            import gc

            gc.collect()
            # A new lock in the child works (a runtime of its own).
            fresh = Lock(key + "-child", client=Client(agent.addr))
            results.append("child lock " + str(fresh.acquire(timeout=5)))
            fresh.release()
        except BaseException as e:
            results.append(f"crash {type(e).__name__}: {e}")
        os.write(w, ("\n".join(results)).encode())
        os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        results = f.read().splitlines()
    assert os.WEXITSTATUS(status) == 0
    assert results == ["ForkedProcessError"] * 4 + ["child lock True"]
    time.sleep(0.3)  # anything the child had wrongly started would show by now
    entry = agent.kv(key)
    assert entry is not None
    assert entry["Session"] == guard.session_id
    assert guard.is_held
    assert lock.fencing_token == token
    guard.__exit__(None, None, None)
    assert agent.kv(key) is None


def test_held_locks_are_released_at_exit(agent: ConsulDev, prefix: str) -> None:
    key = f"{prefix}/atexit"
    p = child(
        f"""
        import consul_lock
        lock = consul_lock.Lock({key!r})
        assert lock.acquire()
        print("held", flush=True)
        # exits without releasing
        """,
        agent,
    )
    out, err = finish(p, 20)
    assert p.returncode == 0, err
    assert out.strip() == "held"
    # Released by the exit pass, not by the session's TTL (15 s).
    agent.wait_until("released at exit", lambda: agent.kv(key) is None, timeout=2)
    agent.wait_until("no session left", lambda: not agent.sessions_named(key), timeout=2)
