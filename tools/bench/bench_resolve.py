"""Benchmark: resolve() on a plan with 1,000 rules, random paths of depth 1–8.

Target: at least 500,000 resolutions per second. The baseline, measured in the same run, is
the obvious linear scan (for every rule, is it the path or an ancestor? keep the longest),
which is what resolution costs without the per-plan index. Prints rates and ratios.

    .venv/bin/python tools/bench/bench_resolve.py [--rules 1000] [--queries 200000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from litefs.options import VALID_OPTIONS
from litefs.plan import Plan, Rule, Source
from litefs.resolve import resolve

TARGET = 500_000  # resolutions per second

WORDS = [
    "etc", "var", "lib", "log", "usr", "share", "opt", "xcat", "ssh", "cache", "run", "tmp",
    "spool", "mail", "cron", "lvm", "systemd", "system", "network", "conf.d", "rc.d", "init.d",
    "profile.d", "sysconfig", "yum", "dnf", "pki", "tls", "certs", "local", "bin", "sbin",
]


def random_path(rnd: random.Random, depth: int) -> str:
    return "/" + "/".join(rnd.choice(WORDS) + (str(rnd.randrange(20)) if rnd.random() < 0.3 else "")
                          for _ in range(depth))


def make_plan(rnd: random.Random, n_rules: int) -> Plan:
    paths: set[str] = set()
    while len(paths) < n_rules:
        paths.add(random_path(rnd, rnd.randint(1, 6)))
    rules = tuple(
        Rule(path=p, option=rnd.choice(VALID_OPTIONS), is_dir=rnd.random() < 0.5)
        for p in sorted(paths)
    )
    sources = (Source("1", "s:/a", "s", "/a"), Source("2", "s:/b", "s", "/b"))
    return Plan(image="bench", rules=rules, sources=sources)


def make_queries(rnd: random.Random, plan: Plan, n: int) -> list[str]:
    rule_paths = [r.path for r in plan.rules]
    out = []
    for _ in range(n):
        depth = rnd.randint(1, 8)
        if rnd.random() < 0.5:  # half under a listed path, half anywhere
            base = rnd.choice(rule_paths)
            have = base.count("/")
            extra = max(0, depth - have)
            out.append(base + (random_path(rnd, extra) if extra else ""))
        else:
            out.append(random_path(rnd, depth))
    return out


def linear_scan(rules: tuple[Rule, ...], path: str) -> Rule | None:
    best: Rule | None = None
    best_len = -1
    for r in rules:
        rp = r.path
        if (path == rp or path.startswith(rp + "/")) and len(rp) > best_len:
            best, best_len = r, len(rp)
    return best


def rate(fn: Callable[[list[str]], object], queries: list[str], min_seconds: float = 1.0) -> float:
    done = 0
    start = time.perf_counter()
    while True:
        fn(queries)
        done += len(queries)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    plan = make_plan(rnd, args.rules)
    queries = make_queries(rnd, plan, args.queries)

    # Same answers first: a fast wrong resolver is no use.
    for q in queries[:2000]:
        assert resolve(plan, q).rule == linear_scan(plan.rules, q), q

    def fast(qs: list[str]) -> None:
        for q in qs:
            resolve(plan, q)

    base_qs = queries[:2000]

    def naive(qs: list[str]) -> None:
        rules = plan.rules
        for q in qs:
            linear_scan(rules, q)

    fast_rate = rate(fast, queries)
    base_rate = rate(naive, base_qs)
    depth = sum(q.count("/") for q in queries) / len(queries)
    print(f"resolve: {len(plan.rules)} rules, {len(queries)} random paths (mean depth {depth:.1f})")
    print(f"  resolve()           {fast_rate:12,.0f} resolutions/s")
    print(f"  linear scan (base)  {base_rate:12,.0f} resolutions/s")
    print(f"  target              {TARGET:12,} resolutions/s")
    print(f"  ratio to target     {fast_rate / TARGET:12.2f}x  ({'MET' if fast_rate >= TARGET else 'NOT MET'})")
    print(f"  ratio to baseline   {fast_rate / base_rate:12.1f}x")


if __name__ == "__main__":
    main()
