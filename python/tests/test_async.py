"""AsyncLock and the asyncio bridge: a cancelled acquire leaves nothing in Consul, a cancelled
release still releases, LockLost after an outside destroy."""

from __future__ import annotations

import asyncio

import pytest
from consul_dev import ConsulDev
from consul_lock import AsyncLock, Client, LockLost, NotAcquired


def leftovers(agent: ConsulDev, key: str) -> list[str]:
    """What of ours is still in Consul: sessions named for the key, the key, its queue entries."""
    out = [f"session {s['ID']}" for s in agent.sessions_named(key)]
    if agent.kv(key) is not None:
        out.append(f"key {key}")
    out += [f"key {k}" for k in agent.keys(key + "/")]
    out += [f"key {k}" for k in agent.keys(key + ".")]
    return out


def test_async_acquire_release(agent: ConsulDev, client: Client, prefix: str) -> None:
    key = f"{prefix}/async"

    async def main() -> None:
        a, b = AsyncLock(key, client=client), AsyncLock(key, client=client)
        async with a as guard:
            assert guard.fencing_token > 0
            assert await a.locked()
            assert await b.acquire(timeout=0.2) is False
            assert await b.acquire(blocking=False) is False
            with pytest.raises(NotAcquired):
                async with b.hold(timeout=0.1):
                    pass
        assert not await a.locked()
        assert await b.acquire(timeout=5)
        assert b.fencing_token is not None
        await b.release()

    asyncio.run(main())
    agent.wait_until("nothing left", lambda: not leftovers(agent, key))


def test_cancellation_sweep_leaves_nothing(agent: ConsulDev, client: Client, prefix: str) -> None:
    """Cancel acquire after 0..50 ms, free key and held key: nothing of the cancelled one stays."""

    async def sweep(held: bool) -> list[str]:
        key = f"{prefix}/cancel-{'held' if held else 'free'}"
        holder = AsyncLock(key, client=client, lock_delay=0)
        if held:
            assert await holder.acquire(timeout=5)
            # The check below can see a waiter: one that waits shows its session and queue entry.
            waiter = AsyncLock(key, client=client, lock_delay=0)
            task = asyncio.ensure_future(waiter.acquire())
            await asyncio.sleep(0.3)
            seen = leftovers(agent, key)
            assert any("session" in x for x in seen)
            assert any(".consul-lock-queue/" in x for x in seen)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        found: list[str] = []
        for ms in range(0, 51, 2):
            lock = AsyncLock(key, client=client, lock_delay=0)
            task = asyncio.ensure_future(lock.acquire())
            await asyncio.sleep(ms / 1000)
            task.cancel()
            try:
                got = await task
            except asyncio.CancelledError:
                got = False
            if got:  # it won before the cancel arrived: a normal hold, released normally
                await lock.release()
            assert not lock.is_held
        if held:
            await holder.release()
        # The cancelled acquires clean up in the background: give them a moment, then look.
        deadline = asyncio.get_running_loop().time() + 5
        while asyncio.get_running_loop().time() < deadline:
            found = leftovers(agent, key)
            if not found:
                break
            await asyncio.sleep(0.05)
        return found

    async def main() -> None:
        assert await sweep(held=False) == []
        assert await sweep(held=True) == []

    asyncio.run(main())


def test_cancelled_release_still_releases(agent: ConsulDev, client: Client, prefix: str) -> None:
    key = f"{prefix}/cancel-release"

    async def main() -> None:
        lock = AsyncLock(key, client=client)
        assert await lock.acquire(timeout=5)
        task = asyncio.ensure_future(lock.release())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not lock.is_held

    asyncio.run(main())
    agent.wait_until("released although its caller was cancelled", lambda: not leftovers(agent, key))


def test_async_lock_lost(agent: ConsulDev, client: Client, prefix: str) -> None:
    key = f"{prefix}/async-lost"

    async def main() -> None:
        lock = AsyncLock(key, client=client, lock_delay=0)
        with pytest.raises(LockLost):
            async with lock.hold(timeout=5) as guard:
                agent.put(f"/v1/session/destroy/{guard.session_id}")
                assert await asyncio.wait_for(guard.wait_lost(), 10) is True
                assert guard.lost
        assert not lock.is_held

    asyncio.run(main())
    agent.wait_until("nothing left", lambda: not leftovers(agent, key))


def test_async_waiters_are_served_in_turn(agent: ConsulDev, client: Client, prefix: str) -> None:
    key = f"{prefix}/async-many"

    async def main() -> None:
        inside = 0
        overlaps = 0
        tokens: list[int] = []

        async def worker() -> None:
            nonlocal inside, overlaps
            lock = AsyncLock(key, client=client)
            for _ in range(10):
                async with lock as guard:
                    inside += 1
                    overlaps += inside > 1
                    tokens.append(guard.fencing_token)
                    await asyncio.sleep(0.001)
                    inside -= 1

        await asyncio.gather(*(worker() for _ in range(4)))
        assert overlaps == 0
        assert tokens == sorted(tokens)
        assert len(set(tokens)) == 40

    asyncio.run(main())
