"""Semaphore, Election and Session (sync and asyncio)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from consul_dev import ConsulDev
from consul_lock import (
    AsyncElection,
    AsyncSemaphore,
    AsyncSession,
    Client,
    Election,
    InvalidConfig,
    Leader,
    LockLost,
    NotAcquired,
    Semaphore,
    Session,
)


def test_semaphore_admits_limit_holders(agent: ConsulDev, client: Client, prefix: str) -> None:
    p = f"{prefix}/sem"
    a, b, c = (Semaphore(p, 2, client=client) for _ in range(3))
    assert a.acquire(timeout=5)
    assert b.acquire(timeout=5)
    assert c.acquire(timeout=0.2) is False
    with pytest.raises(NotAcquired):
        c.hold(timeout=0.1)
    assert a.permit is not None
    assert a.permit.token > 0
    a.release()
    with c.hold(timeout=5) as permit:
        assert permit.is_held
    b.release()
    with pytest.raises(InvalidConfig):
        Semaphore(p, 0, client=client)
    agent.wait_until("no session left", lambda: not agent.sessions_named(p))


def test_async_semaphore(client: Client, prefix: str) -> None:
    async def main() -> None:
        p = f"{prefix}/asem"
        a, b = AsyncSemaphore(p, 1, client=client), AsyncSemaphore(p, 1, client=client)
        async with a as permit:
            assert permit.token > 0
            assert await b.acquire(timeout=0.2) is False
        assert await b.acquire(timeout=5)
        await b.release()

    asyncio.run(main())


def test_election_campaign_observe_proclaim_resign(agent: ConsulDev, client: Client, prefix: str) -> None:
    key = f"{prefix}/leader"
    e1, e2 = Election(key, client=client), Election(key, client=client)
    assert e1.leader() is None
    seen: list[Leader | None] = []
    got_two = threading.Event()

    def observe() -> None:
        for state in Election(key, client=client).observe():
            seen.append(state)
            if len([s for s in seen if s is not None]) >= 2:
                got_two.set()
                return

    watcher = threading.Thread(target=observe, daemon=True)
    watcher.start()
    lead = e1.campaign(b"host-a", timeout=5)
    assert lead.is_leader
    leader = e2.leader()
    assert leader is not None
    assert leader.value == b"host-a"
    assert leader.term == lead.term
    with pytest.raises(NotAcquired):
        e2.campaign(b"host-b", timeout=0.2)
    lead.proclaim(b"host-a2")
    assert got_two.wait(10), f"observer saw {seen}"
    values = [s.value for s in seen if s is not None]
    assert values[:2] == [b"host-a", b"host-a2"]
    lead.resign()
    assert not lead.is_leader
    lead2 = e2.campaign("host-b", timeout=10)
    assert lead2.term > lead.term
    with lead2:
        pass
    agent.wait_until("no leader", lambda: e1.leader() is None)


def test_async_election(client: Client, prefix: str) -> None:
    async def main() -> None:
        key = f"{prefix}/aleader"
        e = AsyncElection(key, client=client)
        observed: list[Leader | None] = []

        async def watch() -> None:
            async for s in AsyncElection(key, client=client).observe():
                observed.append(s)
                if s is not None:
                    return

        w = asyncio.ensure_future(watch())
        lead = await e.campaign(b"a", timeout=5)
        await asyncio.wait_for(w, 10)
        assert observed[-1] is not None
        assert observed[-1].term == lead.term
        await lead.proclaim(b"b")
        leader = await e.leader()
        assert leader is not None
        assert leader.value == b"b"
        await lead.resign()
        assert await e.leader() is None

    asyncio.run(main())


def test_session_many_locks_and_loss(agent: ConsulDev, client: Client, prefix: str) -> None:
    with Session(client, lock_delay=0) as s:
        assert s.alive
        a, b = s.lock(f"{prefix}/s1"), s.lock(f"{prefix}/s2")
        with a as ga, b as gb:
            assert ga.session_id == gb.session_id == s.id
        sem = s.semaphore(f"{prefix}/ssem", 2)
        assert sem.acquire(timeout=5)
        sem.release()
        # Two locks on one key through one session never both hold it.
        c, d = s.lock(f"{prefix}/same"), s.lock(f"{prefix}/same")
        assert c.acquire(timeout=5)
        assert d.acquire(timeout=0.2) is False
        c.release()
        with pytest.raises(InvalidConfig):
            Session(client, ttl=1)
        e = s.lock(f"{prefix}/lost")
        with pytest.raises(LockLost), e as g:
            agent.put(f"/v1/session/destroy/{s.id}")
            assert g.wait_lost(10)
        assert s.wait_lost(5)
        assert not s.alive
    agent.wait_until("no session left", lambda: not [x for x in agent.sessions() if x["ID"] == s.id])


def test_async_session(agent: ConsulDev, client: Client, prefix: str) -> None:
    async def main() -> str:
        async with AsyncSession(client) as s:
            lock = s.lock(f"{prefix}/as")
            async with lock as g:
                assert g.session_id == s.id
            return s.id

    sid = asyncio.run(main())
    agent.wait_until("destroyed", lambda: not [x for x in agent.sessions() if x["ID"] == sid])
