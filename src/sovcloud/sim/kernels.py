"""Compiled inner loops of the simulator: FCFS multi-server queues with batch-dependent service.

Queue of one backend b (``c_b`` slots = servers, ``r_b`` replicas, FCFS, no preemption)::

    start_i = max(ready_i, the time a slot frees)     (the min-heap of end times of requests in service;
                                                       ready_i = t_i, or its release for deferred batch)
    n_i     = requests in service at start_i          (heap size after popping ends <= start_i)
    batch_i = clip(n_i / r_b + 1, 1, max_batch_b)     (the others spread over the replicas, plus request i)
    TPOT_i  = tpot0_b + tpot1_b * batch_i             (fixed for the whole request: approximation)
    S_i     = I_i / prefill_tokens_per_s_b + O_i * TPOT_i
    end_i   = start_i + S_i
    TTFT_i  = (start_i - t_i) + I_i / prefill_tokens_per_s_b   (server side; network RTT apart)
    E2E_i   = rtt(zone_i, b) + end_i - t_i

With FCFS the start times of a queue are non-decreasing, so every end time left in the heap after
popping those <= start_i belongs to a request in service at start_i; a heap larger than ``c_b`` (the
capacity was cut while busy) drains before the next start, so a capacity cut is graceful.

Every admitted request also enters one global pending heap (keyed by end time) holding its metrics;
:func:`advance` pops completions up to a time and books them (served, SLO met, latency histograms,
in-flight count per backend that the router reads). :func:`fail` drops the pending requests of failed
backends (lost to a shock); :func:`finish` books what is left at the horizon as in flight.

The functions are plain typed Python compiled with numba when it is installed (``cache=True``), so
the pure-Python path is the same code (slow, for environments without numba).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

_numba_njit: Callable[..., Any] | None
try:
    from numba import njit as _numba_njit
except ImportError:  # pragma: no cover - numba is a declared dependency; this keeps the code importable
    _numba_njit = None

__all__ = [
    "BINS_PER_DECADE",
    "CB_ADMITTED",
    "CB_INFLIGHT",
    "CB_LOST",
    "CB_MET",
    "CB_SERVED",
    "COMPILED",
    "CZ_ARRIVALS",
    "CZ_INFLIGHT",
    "CZ_LOST",
    "CZ_MET",
    "CZ_SERVED",
    "HB_BUSY",
    "HB_LOST",
    "HB_SERVED",
    "HIST_BINS",
    "HIST_LO_LOG10",
    "OUT_INFLIGHT",
    "OUT_LOST",
    "OUT_REJECTED",
    "OUT_SERVED",
    "ZONE_COARSEN",
    "advance",
    "due",
    "fail",
    "finish",
    "jit",
    "serve",
]

F = TypeVar("F", bound=Callable[..., Any])
COMPILED = _numba_njit is not None


def jit(fn: F) -> F:
    """Compile ``fn`` with numba when it is installed (cached); the plain function otherwise."""
    if _numba_njit is None:  # pragma: no cover
        return fn
    return cast(F, _numba_njit(cache=True, nogil=True, error_model="numpy")(fn))


f8 = NDArray[np.float64]
i8 = NDArray[np.int64]
b1 = NDArray[np.bool_]

# histograms of latencies: log-spaced bins from 1 ms over 8 decades (to 1e5 s): per backend 100 bins per
# decade (+-1.2 % per bin); per zone 25 per decade (+-4.7 %; a zone histogram bin is 4 backend bins)
HIST_LO_LOG10, BINS_PER_DECADE, HIST_BINS = -3.0, 100, 800
ZONE_COARSEN = 4
# counters by [kind, zone, workload] and [kind, backend, workload]
CZ_ARRIVALS, CZ_SERVED, CZ_MET, CZ_LOST, CZ_INFLIGHT = 0, 1, 2, 3, 4
CB_ADMITTED, CB_SERVED, CB_MET, CB_LOST, CB_INFLIGHT = 0, 1, 2, 3, 4
# hourly per backend: [kind, hour, backend]
HB_SERVED, HB_LOST, HB_BUSY = 0, 1, 2
# per-request outcome (tracked runs): rejected is OUT_REJECTED + reason code
OUT_SERVED, OUT_LOST, OUT_INFLIGHT, OUT_REJECTED = 1, 2, 3, 10
# pool columns (pool_f[entry, PF_*], pool_i[entry, PI_*]: one request's fields are contiguous)
PF_END, PF_START, PF_TTFT, PF_TPOT, PF_E2E = 0, 1, 2, 3, 4
PI_B, PI_Z, PI_W, PI_OK, PI_ID = 0, 1, 2, 3, 4


@jit
def _bpush(h: f8, base: int, n: int, v: float) -> int:
    i = n
    while i > 0:
        p = (i - 1) >> 1
        if h[base + p] <= v:
            break
        h[base + i] = h[base + p]
        i = p
    h[base + i] = v
    return n + 1


@jit
def _bpop(h: f8, base: int, n: int) -> int:
    """Remove the minimum of the heap ``h[base:base+n]`` (read it first); returns the new size."""
    n -= 1
    v = h[base + n]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= n:
            break
        m = left
        if left + 1 < n and h[base + left + 1] < h[base + left]:
            m = left + 1
        if h[base + m] >= v:
            break
        h[base + i] = h[base + m]
        i = m
    h[base + i] = v
    return n


@jit
def _ppush(hk: f8, hi: i8, n: int, idx: int, key: float) -> int:
    """Push (key, idx) on the 4-ary min-heap ``hk`` (keys) / ``hi`` (pool indices) of size n."""
    i = n
    while i > 0:
        p = (i - 1) >> 2
        if hk[p] <= key:
            break
        hk[i], hi[i] = hk[p], hi[p]
        i = p
    hk[i], hi[i] = key, idx
    return n + 1


@jit
def _psift(hk: f8, hi: i8, n: int, i: int) -> None:
    """Sift entry i of the 4-ary heap down."""
    key, idx = hk[i], hi[i]
    while True:
        first = 4 * i + 1
        if first >= n:
            break
        m = first
        last = min(first + 4, n)
        for c in range(first + 1, last):
            if hk[c] < hk[m]:
                m = c
        if hk[m] >= key:
            break
        hk[i], hi[i] = hk[m], hi[m]
        i = m
    hk[i], hi[i] = key, idx


@jit
def _bin(x: float) -> int:
    if x <= 10.0 ** HIST_LO_LOG10:
        return 0
    k = int((math.log10(x) - HIST_LO_LOG10) * BINS_PER_DECADE)
    return min(k, HIST_BINS - 1)


@jit
def _busy(hb: f8, b: int, a: float, e: float, sign: float, horizon: float) -> None:
    """Add ``sign`` x the overlap of [a, e) with each hour of [0, horizon) to ``hb[HB_BUSY, hour, b]``."""
    e = min(e, horizon)
    h = int(a // 3600.0)
    while a < e and h < hb.shape[1]:
        top = min(e, (h + 1) * 3600.0)
        hb[HB_BUSY, h, b] += sign * (top - a)
        a = top
        h += 1


@jit
def advance(until: float, pool_f: f8, pool_i: i8, hk: f8, hi: i8, free: i8, sc: i8, inflight: f8,
            binflight: f8, wbatch: i8, cz: i8, cb: i8, hb: f8, hz: i8, hbk: i8, outcome: NDArray[np.int8]) -> None:
    """Book every pending request that ends at or before ``until`` as served."""
    n_last = hb.shape[1] - 1
    while sc[0] > 0 and hk[0] <= until:
        idx = hi[0]
        sc[0] -= 1
        if sc[0] > 0:
            hk[0], hi[0] = hk[sc[0]], hi[sc[0]]
            _psift(hk, hi, sc[0], 0)
        b, z, w = pool_i[idx, PI_B], pool_i[idx, PI_Z], pool_i[idx, PI_W]
        ok = pool_i[idx, PI_OK]
        cz[CZ_SERVED, z, w] += 1
        cz[CZ_MET, z, w] += ok
        cb[CB_SERVED, b, w] += 1
        cb[CB_MET, b, w] += ok
        hb[HB_SERVED, min(int(pool_f[idx, PF_END] // 3600.0), n_last), b] += 1.0
        for m in range(3):
            k = _bin(pool_f[idx, PF_TTFT + m])
            hz[z, w, m, k // ZONE_COARSEN] += 1
            hbk[b, w, m, k] += 1
        inflight[b] -= 1.0
        if wbatch[w]:
            binflight[b] -= 1.0
        if outcome.shape[0] > 0:
            outcome[pool_i[idx, PI_ID]] = OUT_SERVED
        free[sc[1]] = idx
        sc[1] += 1


@jit
def serve(t: f8, ready: f8, zone: i8, wl: i8, inp: f8, out: f8, rid: i8, backend: i8, reason: i8, pref: i8,
          bpar: f8, cap: i8, b_site: i8, rtt_s: f8, slo: f8, horizon: float,
          bheap: f8, boff: i8, bn: i8, inflight: f8, binflight: f8, wbatch: i8,
          pool_f: f8, pool_i: i8, hk: f8, hi: i8, free: i8, sc: i8,
          cz: i8, rej: i8, cb: i8, hb: f8, hrej: i8, routed: i8, hz: i8, hbk: i8,
          outcome: NDArray[np.int8], starts: f8) -> int:
    """Serve requests (sorted by ``ready``) with their routing decisions.

    ``t`` is each request's arrival (its latencies count from it), ``ready`` the time it is handed to its
    backend (= ``t``, or later for deferred batch work released from its queue).

    Returns how many were processed: fewer than ``len(t)`` when the pool of pending requests is full
    (the caller grows it and calls again with the rest).

    ``bpar`` rows: effective replicas, prefill tokens/s, tpot0, tpot1, max batch. ``slo`` rows per
    workload: TTFT, TPOT, RTT and end-to-end limits in seconds (inf where none). ``starts`` (same
    length as ``t``, or empty) receives each admitted request's start time.
    """
    n_last = hb.shape[1] - 1
    n_sites = hrej.shape[1] - 1
    for i in range(t.shape[0]):
        ti, z, w = t[i], zone[i], wl[i]
        h = min(int(ti // 3600.0), n_last)
        cz[CZ_ARRIVALS, z, w] += 1
        b = backend[i]
        if b < 0:
            rej[z, w, reason[i]] += 1
            p = pref[i]
            hrej[h, p if p >= 0 else n_sites, w] += 1
            if outcome.shape[0] > 0:
                outcome[rid[i]] = OUT_REJECTED + reason[i]
            continue
        if sc[1] == 0:
            return i
        base, n, c = boff[b], bn[b], cap[b]
        ri = ready[i]
        while n > 0 and bheap[base] <= ri:
            n = _bpop(bheap, base, n)
        start = ri
        while n >= c:
            start = max(start, bheap[base])
            n = _bpop(bheap, base, n)
        while n > 0 and bheap[base] <= start:
            n = _bpop(bheap, base, n)
        batch = min(max(n / bpar[0, b] + 1.0, 1.0), bpar[4, b])
        tpot = bpar[2, b] + bpar[3, b] * batch
        prefill = inp[i] / bpar[1, b]
        end = start + prefill + out[i] * tpot
        bn[b] = _bpush(bheap, base, n, end)
        if starts.shape[0] > 0:
            starts[i] = start
        sc[1] -= 1
        idx = free[sc[1]]
        rtt = rtt_s[z, b]
        ttft = start - ti + prefill
        e2e = rtt + end - ti
        ok = ttft <= slo[0, w] and tpot <= slo[1, w] and rtt <= slo[2, w] and e2e <= slo[3, w]
        pool_f[idx, PF_END], pool_f[idx, PF_START] = end, start
        pool_f[idx, PF_TTFT], pool_f[idx, PF_TPOT], pool_f[idx, PF_E2E] = ttft, tpot, e2e
        pool_i[idx, PI_B], pool_i[idx, PI_Z], pool_i[idx, PI_W] = b, z, w
        pool_i[idx, PI_OK], pool_i[idx, PI_ID] = 1 if ok else 0, rid[i]
        sc[0] = _ppush(hk, hi, sc[0], idx, end)
        inflight[b] += 1.0
        if wbatch[w]:
            binflight[b] += 1.0
        cb[CB_ADMITTED, b, w] += 1
        routed[z, b_site[b]] += 1
        _busy(hb, b, start, end, 1.0, horizon)
    return len(t)


@jit
def due(since: float, until: float, bheap: f8, boff: i8, bn: i8, out: f8) -> None:
    """``out[b]``: requests in service at backend b at ``since`` that end at or before ``until``."""
    for b in range(bn.shape[0]):
        c = 0
        base = boff[b]
        for j in range(bn[b]):
            e = bheap[base + j]
            if since < e <= until:
                c += 1
        out[b] = c


@jit
def fail(failed: b1, at: float, horizon: float, bn: i8, inflight: f8, binflight: f8, pool_f: f8, pool_i: i8,
         hk: f8, hi: i8, free: i8, sc: i8, cz: i8, cb: i8, hb: f8, outcome: NDArray[np.int8]) -> None:
    """Drop every pending request of the ``failed`` backends at time ``at`` (lost to a shock)."""
    h = min(int(at // 3600.0), hb.shape[1] - 1)
    kept = 0
    for j in range(sc[0]):
        idx = hi[j]
        b = pool_i[idx, PI_B]
        if not failed[b]:
            hk[kept], hi[kept] = hk[j], idx
            kept += 1
            continue
        z, w = pool_i[idx, PI_Z], pool_i[idx, PI_W]
        cz[CZ_LOST, z, w] += 1
        cb[CB_LOST, b, w] += 1
        hb[HB_LOST, h, b] += 1.0
        _busy(hb, b, max(pool_f[idx, PF_START], at), pool_f[idx, PF_END], -1.0, horizon)
        if outcome.shape[0] > 0:
            outcome[pool_i[idx, PI_ID]] = OUT_LOST
        free[sc[1]] = idx
        sc[1] += 1
    sc[0] = kept
    for i in range((kept - 2) // 4, -1, -1):
        _psift(hk, hi, kept, i)
    for b in range(failed.shape[0]):
        if failed[b]:
            bn[b] = 0
            inflight[b] = 0.0
            binflight[b] = 0.0


@jit
def finish(pool_i: i8, hi: i8, sc: i8, cz: i8, cb: i8, outcome: NDArray[np.int8]) -> None:
    """Book every request still pending (after :func:`advance` to the horizon) as in flight."""
    for j in range(sc[0]):
        idx = hi[j]
        b, z, w = pool_i[idx, PI_B], pool_i[idx, PI_Z], pool_i[idx, PI_W]
        cz[CZ_INFLIGHT, z, w] += 1
        cb[CB_INFLIGHT, b, w] += 1
        if outcome.shape[0] > 0:
            outcome[pool_i[idx, PI_ID]] = OUT_INFLIGHT
