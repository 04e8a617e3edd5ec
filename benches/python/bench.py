"""consul_lock (Python) beside python-consul-lock and a careful hand-written py-consul lock, and
the Rust crate's own cycle, all against ONE Consul dev agent in one run (scripts/bench-python.sh).

Parts:
  cycle    uncontended acquire + release: p50/p99 per round; per round, in a rotated order, each
           Python scenario next to the Rust crate's same cycle (benches/python/rust_cycle.rs, a
           long-lived process on the same agent) and one round of python-consul-lock's cycle (the
           peer benchmark's latency part), so that machine drift hits all alike. HTTP requests per
           cycle from ``Client.request_count`` (the crate's counter, also in the Rust process).
  handoff  N processes (spawn) on one key, each holding HOLD ms: handoff latency = next acquire
           returned - previous release started, across the N processes

What each cycle writes: ``Lock`` (default 15 s lock-delay) creates a session, takes the key (one
``lock`` transaction), deletes it owner-checked and destroys the session in the background (4 writes,
3 on the caller's path); ``lock_delay=0`` lets the destroy delete the key (3 writes); the seed API
(``lock_delay=0``, one attempt) reads the key first, then the same 3 writes; a shared ``Session`` 2
(lock, owner-checked delete). python-consul-lock 0.1.6 creates a session (lock-delay 0, behavior
delete), ``?acquire``s the key and destroys the session: 3 writes, 3 requests, no read, no renewal.
The hand-written py-consul lock does the same 3 writes plus a renewal thread.

python-consul-lock runs in its own virtualenv (it needs python-consul, whose module name clashes with
py-consul's) through the peer benchmark's run.sh, against the same agent.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import math
import multiprocessing as mp
import os
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
from consul_lock._client import resolve

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


class RustCycle:
    """The Rust crate's own cycle (benches/python/rust_cycle.rs, an example of the binding's crate):
    one long-lived process on the same agent, told ``SCENARIO N`` per batch."""

    def __init__(self, exe: str, addr: str) -> None:
        self.p = subprocess.Popen([exe, addr], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, scenario: str, n: int) -> tuple[list[float], float]:
        assert self.p.stdin is not None
        assert self.p.stdout is not None
        self.p.stdin.write(f"{scenario} {n}\n")
        self.p.stdin.flush()
        d = json.loads(self.p.stdout.readline())
        if "error" in d:
            raise RuntimeError(f"rust_cycle {scenario}: {d['error']}")
        return list(d["ms"]), float(d["requests"])

    def close(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        self.p.wait(30)


SETTLE = 0.2  # s after a batch: background session destroys land before requests are counted


def part_cycle(
    agent: ConsulDev, n: int, rounds: int, rust_exe: str | None, peer_sh: str | None, out: Path
) -> dict[str, Any]:
    """Per round, in an order rotated each round: each Python scenario, then (or, every other round,
    first) the Rust crate's same cycle; python-consul-lock's cycle (the peer's latency part, one
    round) once per round. Requests per cycle from ``Client.request_count`` (the crate's counter)."""
    client = consul_lock.Client(agent.addr)
    pc = consul.Consul(host="127.0.0.1", port=agent.port)
    ours = consul_lock.Lock("bench/py/cycle", client=client)
    ours0 = consul_lock.Lock("bench/py/cycle0", client=client, lock_delay=0)
    seed = consul_lock.EphemeralLock("bench/py/seed", consul_client=pc)
    seed_client = resolve(pc)  # the Client the seed API made from the py-consul object
    hand = HandLock(pc, "bench/py/hand")
    rust = RustCycle(rust_exe, agent.addr) if rust_exe else None

    def batch(lock: Any, counted: consul_lock.Client | None) -> tuple[list[float], float | None]:
        for _ in range(5):  # warm-up
            lock.acquire()
            lock.release()
        time.sleep(SETTLE)
        r0 = counted.request_count if counted else 0

        def cycle() -> None:
            lock.acquire()
            lock.release()

        v = rounds_of(cycle, n)
        time.sleep(SETTLE)
        return v, ((counted.request_count - r0) / n if counted else None)

    def b_shared() -> tuple[list[float], float | None]:
        # A fresh session per batch (the peer's latency part destroys every session on the agent).
        sess = consul_lock.Session(client, lock_delay=0).create()
        try:
            return batch(sess.lock("bench/py/shared"), client)
        finally:
            sess.destroy()

    # name -> (python batch, rust scenario, writes per cycle)
    scen: dict[str, tuple[Callable[[], tuple[list[float], float | None]], str | None, str]] = {
        "consul_lock.Lock, default lock-delay 15 s": (lambda: batch(ours, client), "default", "4"),
        "consul_lock.Lock, lock_delay=0": (lambda: batch(ours0, client), "delay0", "3"),
        "consul_lock.EphemeralLock (seed API, py-consul client)": (
            lambda: batch(seed, seed_client),
            "seed",
            "3",
        ),
        "consul_lock Session.lock (shared session)": (b_shared, "shared", "2"),
        "hand-written py-consul lock (create, renew thread, acquire, destroy)": (
            lambda: batch(hand, None),
            None,
            "3",
        ),
    }
    res: dict[str, dict[str, Any]] = {
        name: {
            "writes": w,
            "py": {"p50": [], "p99": [], "req": []},
            "rust": {"p50": [], "p99": [], "req": []},
        }
        for name, (_, _, w) in scen.items()
    }
    peer_rounds: list[dict[str, Any]] = []
    names = list(scen)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            py_batch, rust_sc, _ = scen[name]
            sides: list[tuple[str, Callable[[], tuple[list[float], float | None]]]] = [("py", py_batch)]
            if rust and rust_sc:
                sides.append(("rust", functools.partial(rust.run, rust_sc, n)))
            if r % 2:
                sides.reverse()
            for side, f in sides:
                v, req = f()
                res[name][side]["p50"].append(pct(v, 50))
                res[name][side]["p99"].append(pct(v, 99))
                res[name][side]["req"].append(req)
        if peer_sh:
            lat = peer(
                peer_sh, agent.addr, out / f"peer-latency-{r + 1}", ["latency", "-n", str(n), "--rounds", "1"]
            )
            peer_rounds.append(lat["latency"]["scenarios"]["library (EphemeralLock acquire+release)"])
        print(f"cycle round {r + 1}/{rounds} done", file=sys.stderr)
    if rust:
        rust.close()
    if peer_rounds:
        res["python-consul-lock 0.1.6 EphemeralLock (python-consul 1.1.0)"] = {
            "writes": f"{statistics.median(p['median_raft_writes_per_cycle'] for p in peer_rounds):g}",
            "py": {
                "p50": [p["median_p50_ms"] for p in peer_rounds],
                "p99": [p["median_p99_ms"] for p in peer_rounds],
                "req": [3.0 for _ in peer_rounds],  # create, ?acquire, destroy (the peer's count part)
            },
            "rust": {"p50": [], "p99": [], "req": []},
        }
    return res


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
    ap.add_argument("--handoffs", type=int, default=100, help="0: no handoff part")
    ap.add_argument("--hold-ms", type=float, default=5.0)
    ap.add_argument("--rust-cycle", help="the Rust crate's cycle (rust_cycle example) executable")
    ap.add_argument("--peer", help="the python-consul-lock peer's run.sh")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    agent = ConsulDev()
    res: dict[str, Any] = {"python": sys.version.split()[0], "consul_lock": consul_lock.__version__}
    res["cycle"] = part_cycle(agent, a.n, a.rounds, a.rust_cycle, a.peer, out)
    if a.handoffs > 0:
        res["handoff"] = {
            kind: part_handoff(agent, kind, a.procs, a.handoffs, a.hold_ms) for kind in ("ours", "hand")
        }
    if a.peer and a.handoffs > 0:
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


def _med(v: list[float]) -> float:
    return statistics.median(v) if v else math.nan


def _ratios(a: list[float], b: list[float]) -> str:
    """Median of a ÷ median of b, and the range of the per-round ratios."""
    if not a or not b:
        return "-"
    per = [x / y for x, y in zip(a, b, strict=False)]
    return f"{_med(a) / _med(b):.2f}x ({min(per):.2f}-{max(per):.2f})"


def report(r: dict[str, Any], a: argparse.Namespace) -> str:
    L = [
        f"### Uncontended cycle (Python {r['python']}, {a.rounds} rounds x {a.n} cycles; p50/p99 per "
        "round, then the median over rounds; in brackets the range of the per-round ratios)\n"
    ]
    L.append(
        "| scenario | Raft writes / HTTP requests per cycle | p50 ms | p99 ms "
        + "| Rust crate, same cycle: p50 / p99 ms | ours ÷ Rust (p50) "
        + "| python-consul-lock ÷ ours (p50) | per-round p50 (Rust) |"
    )
    L.append("|---|---|---|---|---|---|---|---|")
    cyc = r["cycle"]
    seed_name = next((k for k in cyc if k.startswith("python-consul-lock")), None)
    seed = cyc[seed_name]["py"]["p50"] if seed_name else []
    for name, v in cyc.items():
        py, ru = v["py"], v["rust"]
        req = [x for x in py["req"] if x is not None]
        reqs = f"{_med(req):.2f}" if req else "3 (by construction)"
        if ru["req"]:
            reqs += f" (Rust {_med(ru['req']):.2f})"
        rust = f"{_med(ru['p50']):.2f} / {_med(ru['p99']):.2f}" if ru["p50"] else "-"
        vs_seed = _ratios(seed, py["p50"]) if seed and name != seed_name else "-"
        rounds = ", ".join(
            f"{x:.2f}" + (f" ({y:.2f})" if ru["p50"] else "")
            for x, y in itertools.zip_longest(py["p50"], ru["p50"], fillvalue=math.nan)
        )
        L.append(
            f"| {name} | {v['writes']} / {reqs} | {_med(py['p50']):.2f} | {_med(py['p99']):.2f} | {rust} | "
            f"{_ratios(py['p50'], ru['p50'])} | {vs_seed} | {rounds} |"
        )
    if "handoff" not in r:
        return "\n".join(L)
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
