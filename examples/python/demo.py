"""A runnable demo of consul_lock from Python: the seed's API, the threading-style Lock with its
fencing token, and an asyncio lock. Run it against any agent (``consul agent -dev``)::

    CONSUL_HTTP_ADDR=127.0.0.1:8500 python examples/python/demo.py
"""

from __future__ import annotations

import asyncio
import itertools
import threading

import consul_lock
from consul_lock import AsyncLock, EphemeralLock, Lock


def seed_api() -> None:
    # python-consul-lock's API: the key becomes locks/ephemeral/demo/seed.
    ephemeral_lock = EphemeralLock("demo/seed", acquire_timeout_ms=500)
    with ephemeral_lock.hold():
        print("seed API: holding", ephemeral_lock.full_key)


def threads() -> None:
    counter = {"in": 0, "max": 0}
    tokens: list[int] = []

    def work(n: int) -> None:
        lock = Lock("demo/threads")  # one object per thread: they wait for each other via Consul
        for _ in range(n):
            with lock as guard:
                counter["in"] += 1
                counter["max"] = max(counter["max"], counter["in"])
                tokens.append(guard.fencing_token)
                counter["in"] -= 1

    ts = [threading.Thread(target=work, args=(5,)) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    increasing = all(a < b for a, b in itertools.pairwise(tokens))
    print(f"threads: 20 turns, at most {counter['max']} inside at once; tokens increase: {increasing}")


async def with_asyncio() -> None:
    lock = AsyncLock("demo/async")
    async with lock.hold(timeout=5.0) as guard:
        print("asyncio: holding with fencing token", guard.fencing_token)
    print("asyncio: released; anyone holding now?", await lock.locked())


def main() -> None:
    client = consul_lock.Client.from_env()
    print("Consul at", client.address)
    seed_api()
    threads()
    asyncio.run(with_asyncio())


if __name__ == "__main__":
    main()
