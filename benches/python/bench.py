"""consul_lock (Python) beside python-consul-lock and a careful hand-written py-consul lock, and
the Rust crate's own cycle, all against ONE Consul dev agent in one run (scripts/bench-python.sh).

Parts:
  cycle    uncontended acquire + release: p50/p99 per round, rounds interleaved (ours, hand-written,
           the Rust crate's lockbench) so that machine drift hits all alike
  handoff  N processes (spawn) on one key, each holding HOLD ms: handoff latency = next acquire
           returned - previous release started, across the N processes

python-consul-lock runs in its own virtualenv (it needs python-consul, whose module name clashes with
py-consul's) through the peer benchmark's run.sh, against the same agent.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import consul  # py-consul
import consul_lock

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python" / "tests"))
from consul_dev import ConsulDev  # noqa: E402


def pct(v: list[float], p: float) -> float:
    s = sorted(v)
    return s[max(1, math.ceil(p / 100 * len(s))) - 1]


# --- a careful hand-written py-consul lock --------------------------------------------------------
class HandLock:
    """What a careful py-consul user writes: a TTL session (Behavior delete, lock-delay 0) renewed
    by a thread every TTL/2, ``kv.put(acquire=)``, a blocking query while the key is held, and
    release by destroying the session (owner-safe: Consul deletes only keys the session holds)."""

    def __init__(self, c: consul.Consul, key: str, ttl: int = 15) -> None:
        self.c, self.key, self.ttl = c, key, ttl
        self.sid: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _renew(self, sid: str) -> None:
        while not self._stop.wait(self.ttl / 2):
            try:
                self.c.session.renew(sid)
            except Exception:
                return

    def acquire(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        sid = self.c.session.create(ttl=self.ttl, behavior="delete", lock_delay=0)
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, args=(sid,), daemon=True)
        self._renewer.start()
        index = None
        while True:
            if self.c.kv.put(self.key, "held", acquire=sid):
                self.sid = sid
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self._drop(sid)
                return False
            wait = "5s" if left is None else f"{max(1, min(5000, int(left * 1000)))}ms"
            index, entry = self.c.kv.get(self.key, index=index, wait=wait)
            if entry is None:
                index = None  # free: try at once

    def _drop(self, sid: str) -> None:
        self._stop.set()
        self.c.session.destroy(sid)

    def release(self) -> None:
        sid, self.sid = self.sid, None
        if sid is not None:
            self._drop(sid)


# --- cycle ---------------------------------------------------------------------------------------
def rounds_of(cycle: Callable[[], None], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        cycle()
        out.append((time.perf_counter() - t) * 1000)
    return out


def rust_cycle(lockbench: str, addr: str, n: int) -> dict[str, float]:
    env = dict(os.environ, LOCKBENCH_CONSUL=addr, LOCKBENCH_N=str(n), LOCKBENCH_ROUNDS="1")
    out = subprocess.run([lockbench, "latency"], env=env, capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and re.fullmatch(r"[0-9.]+", cells[1]):
            rows[cells[0]] = float(cells[1])
    return {
        "rust EphemeralLock, own session, default lock-delay": rows[
            "**EphemeralLock**, own session, default lock-delay 15 s"
        ],
        "rust EphemeralLock, own session, lock_delay(0)": rows[
            "**EphemeralLock**, own session, `lock_delay(0)`"
        ],
        "rust shared Session": rows["**shared `Session`**: `session.lock(k).hold()` + `release()`"],
    }


def part_cycle(agent: ConsulDev, n: int, rounds: int, lockbench: str | None) -> dict[str, Any]:
    client = consul_lock.Client(agent.addr)
    pc = consul.Consul(host="127.0.0.1", port=agent.port)
    ours = consul_lock.Lock("bench/py/cycle", client=client)
    ours0 = consul_lock.Lock("bench/py/cycle0", client=client, lock_delay=0)
    seed = consul_lock.EphemeralLock("bench/py/seed", consul_client=pc)
    sess = consul_lock.Session(client, lock_delay=0).create()
    shared = sess.lock("bench/py/shared")
    hand = HandLock(pc, "bench/py/hand")

    def c_ours() -> None:
        ours.acquire()
        ours.release()

    def c_ours0() -> None:
        ours0.acquire()
        ours0.release()

    def c_seed() -> None:
        seed.acquire()
        seed.release()

    def c_shared() -> None:
        shared.acquire()
        shared.release()

    def c_hand() -> None:
        hand.acquire()
        hand.release()

    scen: dict[str, Callable[[], None]] = {
        "consul_lock.Lock, default lock-delay (4 writes)": c_ours,
        "consul_lock.Lock, lock_delay=0 (3 writes)": c_ours0,
        "consul_lock.EphemeralLock (seed API, py-consul client)": c_seed,
        "consul_lock Session.lock (shared session, 2 writes)": c_shared,
        "hand-written py-consul lock (create, renew thread, acquire, destroy)": c_hand,
    }
    p50: dict[str, list[float]] = {k: [] for k in scen}
    p99: dict[str, list[float]] = {k: [] for k in scen}
    for f in scen.values():  # warm-up
        rounds_of(f, 10)
    for r in range(rounds):
        for name, f in scen.items():
            v = rounds_of(f, n)
            p50[name].append(pct(v, 50))
            p99[name].append(pct(v, 99))
        if lockbench:
            for name, v50 in rust_cycle(lockbench, agent.addr.removeprefix("http://"), n).items():
                p50.setdefault(name, []).append(v50)
        print(f"cycle round {r + 1}/{rounds} done", file=sys.stderr)
    sess.destroy()
    return {
        name: {
            "p50_ms": statistics.median(v),
            "p99_ms": statistics.median(p99[name]) if name in p99 else None,
            "p50_per_round": v,
        }
        for name, v in p50.items()
    }


# --- handoff -------------------------------------------------------------------------------------
def _contender(
    kind: str, addr: str, port: int, key: str, hold: float, target: int, count: Any, q: Any
) -> None:
    if kind == "ours":
        lock = consul_lock.Lock(key, client=consul_lock.Client(addr))
        acquire: Callable[[], object] = lock.acquire
        release: Callable[[], object] = lock.release
    else:
        hl = HandLock(consul.Consul(host="127.0.0.1", port=port), key)
        acquire, release = hl.acquire, hl.release
    me = os.getpid()
    while True:
        acquire()
        t_acq = time.monotonic()
        with count.get_lock():
            count.value += 1
            done = count.value > target
        time.sleep(hold)
        t_rel = time.monotonic()
        release()
        q.put((t_acq, t_rel, me))
        if done:
            return


def part_handoff(agent: ConsulDev, kind: str, procs: int, handoffs: int, hold_ms: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    count, q = ctx.Value("i", 0), ctx.Queue()
    key = f"bench/py/handoff-{kind}-{time.time_ns()}"
    args = (kind, agent.addr, agent.port, key, hold_ms / 1000, handoffs + 1, count, q)
    ps = [ctx.Process(target=_contender, args=args) for _ in range(procs)]
    for p in ps:
        p.start()
    recs: list[tuple[float, float, int]] = []
    while len(recs) < handoffs + procs and any(p.is_alive() for p in ps):
        with contextlib.suppress(Exception):
            recs.append(q.get(timeout=1))
    for p in ps:
        p.join(60)
    while not q.empty():
        recs.append(q.get())
    recs.sort()
    overlaps = sum(1 for a, b in itertools.pairwise(recs) if b[0] < a[1])
    hand = [(b[0] - a[1]) * 1000 for a, b in itertools.pairwise(recs)]
    cross = [(b[0] - a[1]) * 1000 for a, b in itertools.pairwise(recs) if a[2] != b[2]]
    return {
        "acquisitions": len(recs),
        "overlaps": overlaps,
        "handoff_p50_ms": pct(hand, 50),
        "handoff_p90_ms": pct(hand, 90),
        "handoff_p99_ms": pct(hand, 99),
        "cross_process_share": len(cross) / max(1, len(hand)),
    }


# --- the seed, through the peer benchmark --------------------------------------------------------
def peer(run_sh: str, addr: str, out: Path, part: list[str]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [run_sh, "--consul", addr.removeprefix("http://"), "--out", str(out), *part]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return dict(json.loads((out / "results.json").read_text()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200, help="cycles per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--handoffs", type=int, default=100)
    ap.add_argument("--hold-ms", type=float, default=5.0)
    ap.add_argument("--lockbench", help="the Rust crate's lockbench executable")
    ap.add_argument("--peer", help="the python-consul-lock peer's run.sh")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    agent = ConsulDev()
    res: dict[str, Any] = {"python": sys.version.split()[0], "consul_lock": consul_lock.__version__}
    res["cycle"] = part_cycle(agent, a.n, a.rounds, a.lockbench)
    res["handoff"] = {
        kind: part_handoff(agent, kind, a.procs, a.handoffs, a.hold_ms) for kind in ("ours", "hand")
    }
    if a.peer:
        lat = peer(
            a.peer, agent.addr, out / "peer-latency", ["latency", "-n", str(a.n), "--rounds", str(a.rounds)]
        )
        res["peer_cycle"] = lat["latency"]["scenarios"]["library (EphemeralLock acquire+release)"]
        con = peer(
            a.peer,
            agent.addr,
            out / "peer-contend",
            [
                *(
                    "contend",
                    "--procs",
                    str(a.procs),
                    "--handoffs",
                    str(a.handoffs),
                    "--contend-repeats",
                    "1",
                ),
                *("--hold-ms", str(a.hold_ms), "--sweep-procs", "2", "--sweep-holds-ms", "20"),
                *("--sweep-handoffs", "10"),
            ],
        )
        res["peer_handoff"] = {k: con[k][0]["handoff_all"] for k in ("contend", "contend_forced")}
    agent.stop()
    (out / "results.json").write_text(json.dumps(res, indent=1))
    print(report(res, a))


def report(r: dict[str, Any], a: argparse.Namespace) -> str:
    L = [
        f"### Uncontended cycle (Python {r['python']}, {a.rounds} rounds x {a.n} cycles, "
        "median of the rounds' p50)\n"
    ]
    L.append("| scenario | p50 ms | p99 ms | per-round p50 |")
    L.append("|---|---|---|---|")
    for name, v in r["cycle"].items():
        p99 = "-" if v["p99_ms"] is None else f"{v['p99_ms']:.2f}"
        rounds = ", ".join(f"{x:.2f}" for x in v["p50_per_round"])
        L.append(f"| {name} | {v['p50_ms']:.2f} | {p99} | {rounds} |")
    if "peer_cycle" in r:
        pc = r["peer_cycle"]
        L.append(
            f"| python-consul-lock 0.1.6 EphemeralLock (python-consul 1.1.0) | {pc['median_p50_ms']:.2f} | "
            f"{pc['median_p99_ms']:.2f} | {', '.join(f'{x:.2f}' for x in pc['p50_ms'])} |"
        )
    L.append(f"\n### Handoff, {a.procs} processes, hold {a.hold_ms:g} ms, {a.handoffs} handoffs\n")
    L.append("| lock | handoff p50 / p90 / p99 ms | overlaps | handoffs to another process |")
    L.append("|---|---|---|---|")
    for kind, v in r["handoff"].items():
        name = "consul_lock.Lock" if kind == "ours" else "hand-written py-consul lock (blocking query)"
        L.append(
            f"| {name} | {v['handoff_p50_ms']:.1f} / {v['handoff_p90_ms']:.1f} / {v['handoff_p99_ms']:.1f} | "
            f"{v['overlaps']} | {v['cross_process_share']:.0%} |"
        )
    for k, v in r.get("peer_handoff", {}).items():
        L.append(
            f"| python-consul-lock ({'free-for-all' if k == 'contend' else 'forced handoff'}) | "
            f"{v['p50_ms']:.1f} / {v['p90_ms']:.1f} / {v['p99_ms']:.1f} | (checked by the peer) | - |"
        )
    return "\n".join(L)


if __name__ == "__main__":
    main()
