"""Speed of the simulator's serving engine against a straightforward SimPy model of the same queues.

    python benchmarks/sim_speed.py [--n 2000000] [--servers 8] [--rho 0.875] [--plan PLAN --hours H]

1. One FCFS queue (M/M/c, default c = 8 at utilisation 0.875, mu = 1): the same arrivals and service
   times go through the engine (``simcore.fcfs_starts``: one compiled ``serve`` call with the full
   bookkeeping of the simulator, then ``finish``; best of 3 runs) and through SimPy 4 (a ``Resource``
   of capacity c, one process per request; one run). Prints both rates, the ratio, and both mean
   waits against Erlang C.
2. The engine as the simulator drives it: 65 backends sized like the default plan's sampled fleet,
   arrivals routed at random in proportion to the slots, ``advance`` + ``serve`` every simulated
   second (no router: the routing is timed in 3).
3. With ``--plan``: ``sovcloud.sim.run.simulate`` end to end (traffic, router, engine) for ``--hours``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import simpy

from sovcloud.sim.core import Engine, erlang_c_wait, fcfs_starts
from sovcloud.sim.run import SimConfig, simulate


def simpy_waits(arrivals: np.ndarray, service: np.ndarray, servers: int) -> np.ndarray:
    """Waits of the FCFS c-server queue, one SimPy process per request."""
    env = simpy.Environment()
    res = simpy.Resource(env, capacity=servers)
    waits = np.zeros(len(arrivals))

    def request(i: int):  # type: ignore[no-untyped-def]
        with res.request() as req:
            yield req
            waits[i] = env.now - arrivals[i]
            yield env.timeout(service[i])

    def source():  # type: ignore[no-untyped-def]
        for i in range(len(arrivals)):
            yield env.timeout(arrivals[i] - env.now)
            env.process(request(i))

    env.process(source())
    env.run()
    return waits


def single_queue(n: int, servers: int, rho: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lam = rho * servers
    arrivals = np.cumsum(rng.exponential(1.0 / lam, n))
    service = rng.exponential(1.0, n)
    fcfs_starts(arrivals[:100], service[:100], servers)  # compile / load the numba cache first
    t_ours = float("inf")
    for _ in range(3):  # best of 3 (the machine is shared); SimPy, 40x slower, runs once
        t = time.perf_counter()
        ours = fcfs_starts(arrivals, service, servers) - arrivals
        t_ours = min(t_ours, time.perf_counter() - t)
    t = time.perf_counter()
    theirs = simpy_waits(arrivals, service, servers)
    t_simpy = time.perf_counter() - t
    theory = erlang_c_wait(lam, 1.0, servers)
    skip = n // 50
    print(f"M/M/{servers} at rho {rho}, {n:,} requests (same arrivals and service times)")
    print(f"  engine: {n / t_ours:12,.0f} requests/s   mean wait {ours[skip:].mean():.4f} s "
          f"({ours[skip:].mean() / theory - 1:+.2%} vs Erlang C {theory:.4f} s)")
    print(f"  SimPy:  {n / t_simpy:12,.0f} requests/s   mean wait {theirs[skip:].mean():.4f} s "
          f"({theirs[skip:].mean() / theory - 1:+.2%} vs Erlang C)")
    print(f"  ratio:  {t_simpy / t_ours:.0f}x; largest difference between the two models' waits "
          f"{np.abs(ours - theirs).max():.2e} s")


def fleet(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_b, n_z, n_w, n_s = 65, 290, 3, 35
    slots = rng.integers(5, 400, n_b)
    rate = slots.sum() * 0.85 / 20.0  # utilisation 0.85 at a mean service of 20 s
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    backend = rng.choice(n_b, n, p=slots / slots.sum()).astype(np.int64)
    zone, wl = rng.integers(0, n_z, n), rng.integers(0, n_w, n)
    inp, out = np.full(n, 1000.0), rng.exponential(400.0, n)
    eng = Engine.create(slots=slots, replicas=slots / 512.0, prefill_tokens_per_s=np.full(n_b, 5e4),
                        tpot0_s=np.full(n_b, 0.01), tpot1_s=np.full(n_b, 8e-5), max_batch=np.full(n_b, 512.0),
                        b_site=rng.integers(0, n_s, n_b), rtt_s=np.zeros((n_z, n_b)), slo=np.full((4, n_w), np.inf),
                        n_sites=n_s, horizon_s=float(t[-1]) + 1.0, pool_size=int(slots.sum()) * 20 + n // 100)
    zero = np.zeros(n, np.int64)
    rid = np.arange(n, dtype=np.int64)
    edges = np.arange(0.0, t[-1] + 1.0, 1.0)
    idx = np.append(np.searchsorted(t, edges), n)
    start = time.perf_counter()
    for k, now in enumerate(edges):
        a, b = idx[k], idx[k + 1]
        eng.advance(float(now))
        if a < b:
            eng.serve(t[a:b], zone[a:b], wl[a:b], inp[a:b], out[a:b], rid[a:b], backend[a:b], zero[a:b], zero[a:b])
    eng.finish()
    dt = time.perf_counter() - start
    print(f"engine over 65 backends, 1 s ticks ({n / len(edges):.0f} requests per tick, {n:,} requests): "
          f"{n / dt:,.0f} requests/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--servers", type=int, default=8)
    ap.add_argument("--rho", type=float, default=0.875)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--plan", default=None, help="also run sovcloud.sim.run.simulate on this plan")
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--sample", type=float, default=None)
    args = ap.parse_args()
    single_queue(args.n, args.servers, args.rho, args.seed)
    fleet(5 * args.n, args.seed)
    if args.plan:
        simulate(args.plan, SimConfig(hours=0.01, sample=1e-3))  # load caches
        run = simulate(args.plan, SimConfig(hours=args.hours, sample=args.sample, seed=args.seed))
        print(f"simulate {args.plan}: {args.hours:g} h, sample {run.sample:.4g}, {run.requests:,} requests in "
              f"{run.wall_s:.1f} s = {run.requests / run.wall_s:,.0f} requests/s end to end")


if __name__ == "__main__":
    main()
