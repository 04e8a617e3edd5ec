#!/usr/bin/env python3
"""Side-by-side tables from one scripts/bench.sh run: ours (rust-*.md) against the Go api.Lock and
python-consul-lock peers (go-*/results.json, python-*/results.json) measured on the same agent.

    scripts/bench_compare.py target/bench/<run>  > target/bench/<run>/comparison.md
"""
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def md_rows(path):
    """{first cell: [cells]} for every table row of a markdown file."""
    rows = {}
    try:
        with open(path) as f:
            for line in f:
                if line.startswith('| ') and not line.startswith('|---'):
                    cells = [c.strip() for c in line.strip().strip('|').split('|')]
                    rows.setdefault(cells[0], cells)
    except OSError:
        pass
    return rows


def num(x):
    try:
        return float(str(x).split()[0].rstrip('×'))
    except (ValueError, IndexError):
        return float('nan')


def f2(x):
    return '—' if x != x else '%.2f' % x


def fig(x):
    """A count as measured: whole numbers as such, others with two decimals."""
    x = num(x)
    return '—' if x != x else ('%d' % x if x == int(x) else '%.2f' % x)


def ratio(a, b):
    return '—' if a != a or b != b or b == 0 else '%.2f×' % (a / b)


def uncontended(run, where):
    ours = md_rows(os.path.join(run, 'rust-%s-latency.md' % where))
    go = load(os.path.join(run, 'go-%s-latency' % where, 'results.json'))
    py = load(os.path.join(run, 'python-%s-latency' % where, 'results.json'))
    if not ours:
        return None
    go_sc = {s['id']: s for s in (go or {}).get('latency', {}).get('scenarios', [])}
    py_sc = (py or {}).get('latency', {}).get('scenarios', {})
    py_sc = list(py_sc.items()) if isinstance(py_sc, dict) else [(s.get('name', '?'), s) for s in py_sc]
    golock = go_sc.get('golock', {}).get('median_p50_ms', float('nan'))
    pylib = py_sc[0][1]['median_p50_ms'] if py_sc else float('nan')

    def find(prefix):
        for k, v in ours.items():
            if k.startswith(prefix):
                return v
        return None

    floors = {'floor4': find('floor4'), 'floor3': find('floor3'), 'floor2': find('floor2')}
    agent, _, pass_no = where.partition('-')
    title = AGENTS[agent] + (', pass %s' % pass_no if pass_no else '')
    print('### Uncontended cycle, %s: ours vs Go api.Lock vs python-consul-lock (same agent, same run)\n' % title)
    summary = {}
    print('| library / scenario | p50 ms | p99 ms | Raft writes | HTTP requests | ÷ floor of its writes (same client) '
          '| Go api.Lock p50 ÷ this | python-consul-lock p50 ÷ this |')
    print('|---|---|---|---|---|---|---|---|')
    mine = [('**EphemeralLock** (own session, lock-delay 15 s)', find('**EphemeralLock**, own session, default'), 'floor4'),
            ('**EphemeralLock** `lock_delay(0)`', find('**EphemeralLock**, own session, `lock_delay(0)`'), 'floor3'),
            ('**shared `Session`**', find('**shared `Session`**'), 'floor2'),
            ('shared `Session`, `fair(true)` (3 writes)', find('shared `Session`, `fair(true)`'), 'floor3'),
            ('`blocking::EphemeralLock` (lock-delay 15 s)', find('`blocking::EphemeralLock`, default'), 'floor4'),
            ('`blocking::EphemeralLock` `lock_delay(0)`', find('`blocking::EphemeralLock`, `lock_delay(0)`'), 'floor3')]
    for label, row, fl in mine:
        if not row:
            continue
        p50 = num(row[1])
        flr = num(floors[fl][1]) if floors[fl] else float('nan')
        summary[label] = (p50 / flr if flr == flr and flr else float('nan'), golock / p50 if p50 else float('nan'),
                          pylib / p50 if p50 else float('nan'))
        print('| %s | %s | %s | %s | %s | %s (%s %s ms) | %s | %s |' % (
            label, f2(p50), f2(num(row[2])), row[4], row[5], ratio(p50, flr), fl, f2(flr), ratio(golock, p50), ratio(pylib, p50)))
    for sid, label in [('golock', 'Go `api.Lock` (`LockKey`, `Lock`, `Unlock`)'),
                       ('golock_shared', 'Go `api.Lock` with a caller-provided session'),
                       ('floor4_raw', 'Go floor4 raw (`?acquire`/`?release`)'),
                       ('floor3_raw', 'Go floor3 raw'), ('floor2_raw', 'Go floor2 raw')]:
        s = go_sc.get(sid)
        if s:
            print('| %s | %s | %s | %s | %s | — | %s | — |' % (
                label, f2(s['median_p50_ms']), f2(s['median_p99_ms']), fig(s['median_raft_writes_per_cycle']),
                fig(s['median_http_requests_per_cycle']), ratio(golock, s['median_p50_ms'])))
    for name, s in py_sc:
        label = 'python-consul-lock `EphemeralLock`' if name.startswith('library') else 'python ' + name
        print('| %s | %s | %s | %s | %s | — | %s | — |' % (
            label, f2(s['median_p50_ms']), f2(s['median_p99_ms']), fig(s['median_raft_writes_per_cycle']),
            '3' if name.startswith('library') else '—', ratio(golock, s['median_p50_ms'])))
    print()
    return summary


AGENTS = {'dev': 'dev agent', 'server': 'single data-dir server'}


def passes_summary(agent, summaries):
    """One line per scenario: its ratios in every pass (ours, Go, Python interleaved within a pass)."""
    if len(summaries) < 2:
        return
    print('### Uncontended cycle, %s: ratios per pass (ours, Go, Python interleaved within each pass)\n'
          % AGENTS[agent])
    print('| scenario | ÷ floor of its writes, per pass | Go api.Lock p50 ÷ ours, per pass | median | '
          'python-consul-lock p50 ÷ ours, per pass |')
    print('|---|---|---|---|---|')
    labels = [l for l in summaries[0][1] if all(l in s for _, s in summaries)]
    for label in labels:
        cols = list(zip(*[s[label] for _, s in summaries]))
        go = sorted(x for x in cols[1] if x == x)
        med = go[len(go) // 2] if len(go) % 2 else (go[len(go) // 2 - 1] + go[len(go) // 2]) / 2 if go else float('nan')
        print('| %s | %s | %s | %s | %s |' % (label, ' / '.join('%.2f×' % x for x in cols[0]),
              ' / '.join('%.2f×' % x for x in cols[1]), '%.2f×' % med, ' / '.join('%.2f×' % x for x in cols[2])))
    print()


def contended(run):
    ours = md_rows(os.path.join(run, 'rust-dev-contend.md'))
    # BENCH_BASELINE=REV: REV's own contend part, run right after ours on the same agent.
    baselines = [(f[len('rust-baseline-'):-len('-contend.md')], md_rows(os.path.join(run, f)))
                 for f in sorted(os.listdir(run)) if f.startswith('rust-baseline-') and f.endswith('-contend.md')]
    go = load(os.path.join(run, 'go-dev-contend', 'results.json'))
    py = load(os.path.join(run, 'python-dev-contend', 'results.json'))
    if not ours:
        return
    print('### Contended handoff, dev agent (5 ms hold unless noted; forced handoff)\n')
    print('| contenders | library | handoff p50 / p90 / p99 / max ms | req / handoff | Raft writes / acq | turns per contender | calls ≥ 4.9 s; slowest `Lock()`/`hold()` ms |')
    print('|---|---|---|---|---|---|---|')
    go_runs = {}
    for r in (go or {}).get('contend', []):
        key = ('g' if 'goroutines' in r['label'] else 'p') + str(r['participants']) + \
              ('f' if r['mode'] == 'forced-handoff' else '') + ('' if r['hold_ms'] == 5 else '@%d' % r['hold_ms'])
        go_runs.setdefault(key, r)
    py_runs = {}
    for k in ('contend_forced', 'contend_forced_procs_sweep', 'contend_forced_hold_sweep', 'contend'):
        v = (py or {}).get(k) or []
        for r in (v if isinstance(v, list) else [v]):
            key = 'p%d%s%s' % (r['procs'], 'f' if r['mode'] == 'forced-handoff' else '',
                               '' if r['hold_ms'] == 5 else '@%d' % r['hold_ms'])
            py_runs.setdefault(key, r)

    def our_row(label, what, rows=ours):
        row = rows.get(label)
        if row:
            steady = '' if row[8] in ('—', '') else ' (steady %s)' % row[8]
            writes = row[9] if len(row) < 15 or row[14] in ('—', '') else '%s (steady %s)' % (row[9], row[14])
            print('| %s | %s | %s / %s / %s / %s | %s%s | %s | %s | 0; %s |' % (
                label, what, row[2], row[3], row[4], row[5], row[7], steady, writes, row[10], row[6]))

    for n, hold in [(2, ''), (4, ''), (8, ''), (32, ''), (4, '@100'), (8, '@100')]:
        for kind, what in [('t', 'ours, tasks, `Session` each'), ('T', 'ours, tasks, `fair(true)`'),
                           ('p', 'ours, processes'), ('P', 'ours, processes, `fair(true)`'),
                           ('e', 'ours, tasks, `EphemeralLock` per acquisition'),
                           ('E', 'ours, tasks, `EphemeralLock` `fair(true)`')]:
            our_row('%s%df%s' % (kind, n, hold), what)
        for rev, rows in baselines:
            our_row('t%df%s' % (n, hold), 'baseline %s, tasks, `Session` each' % rev, rows)
        for kind, what in [('g', 'Go api.Lock, goroutines'), ('p', 'Go api.Lock, processes')]:
            r = go_runs.get('%s%df%s' % (kind, n, hold))
            if r and r.get('handoff_ms'):
                h = r['handoff_ms']
                turns = r.get('acquisitions_per_participant') or []
                print('| %s%df%s | %s | %.2f / %.2f / %.2f / %.1f | %.2f | %.2f | %d–%d | %d; %.0f |' % (
                    kind, n, hold, what, h['p50_ms'], h['p90_ms'], h['p99_ms'], h['max_ms'],
                    r['requests_per_handoff_in_window'], r['raft_writes_per_acquisition'],
                    min(turns or [0]), max(turns or [0]), r.get('lock_calls_over_4_9s', 0),
                    r.get('max_lock_call_ms', float('nan'))))
        r = py_runs.get('p%df%s' % (n, hold))
        if r:
            h = r['handoff_all']
            print('| p%df%s | python-consul-lock, processes | %.2f / %.2f / %.2f / %.1f | %.2f | %.2f | — | — |' % (
                n, hold, h['p50_ms'], h['p90_ms'], h['p99_ms'], h['max_ms'],
                r['requests_per_handoff_in_window'], r['raft_writes_per_acquisition']))
    print()


def main():
    run = sys.argv[1] if len(sys.argv) > 1 else '.'
    print('## Side by side (generated by scripts/bench_compare.py from %s)\n' % os.path.basename(os.path.abspath(run)))
    for agent in AGENTS:
        uncontended(run, agent)  # runs from before the latency part had passes
        head, tail = 'rust-%s-' % agent, '-latency.md'
        passes = sorted(int(f[len(head):-len(tail)]) for f in os.listdir(run)
                        if f.startswith(head) and f.endswith(tail) and f[len(head):-len(tail)].isdigit())
        summaries = [(k, uncontended(run, '%s-%d' % (agent, k))) for k in passes]
        passes_summary(agent, [(k, s) for k, s in summaries if s])
        if agent == 'dev':
            contended(run)


if __name__ == '__main__':
    main()
