"""Queueing headroom: how busy a deployment may run so interactive requests meet their TTFT target.

A deployment of ``c`` slots, each holding a request for ``S`` seconds (:mod:`sovcloud.physics.serving`),
at utilisation ``rho`` is taken as M/M/c (Erlang C)::

    B(c, a) = Poisson(c; a) / P(Poisson(a) <= c)             Erlang B, a = c rho
    C(c, a) = B(c) / (1 - rho (1 - B(c)))                    probability of waiting
    P(W > t | rho) = C(c, a) exp(-(c / S) (1 - rho) t)       (1 when rho >= 1)

Arrivals are bursty: the rate of each minute is the mean times g ~ Gamma(mean 1, CV ``burstiness``),
the simulator's traffic model. With service times well under a minute the queue follows each
minute's rate, so the share of requests that wait longer than their budget ``t`` is::

    miss(rho) = E_g[ g P(W > t | rho g) ] / E_g[g]    (requests weigh by their minute's rate; the expectation
                                                      over G equiprobable quantiles of g; 1 where t < 0)

:func:`max_utilization` is the largest ``rho`` (bisection; ``miss`` grows with ``rho``) with
``miss(rho) <= tail``, capped at ``cap``. The wait budget of a workload is its TTFT target less the
prefill of a typical prompt and one decode step.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaincc, gammaincinv, gammaln

__all__ = ["QUANTILES", "erlang_c", "max_utilization", "wait_miss"]

#: equiprobable quantiles of the burstiness distribution the expectation is taken over
QUANTILES = 64
#: bisection steps (rho to 2^-30)
STEPS = 30

f8 = NDArray[np.float64]


def erlang_c(servers: ArrayLike, rho: ArrayLike) -> f8:
    """Probability an arrival waits in M/M/c with ``servers`` slots at utilisation ``rho`` (1 when rho >= 1).

    Erlang B in closed form, B(c, a) = Poisson(c; a) / P(Poisson(a) <= c), computed in log space
    (``gammaincc``), so thousands of slots cost no more than one.
    """
    c = np.asarray(servers, dtype=np.float64)
    r = np.asarray(rho, dtype=np.float64)
    c, r = np.broadcast_arrays(c, r)
    a = np.maximum(c * r, 1e-300)
    log_pmf = c * np.log(a) - a - gammaln(c + 1.0)
    cdf = np.maximum(gammaincc(c + 1.0, a), 1e-300)
    b = np.minimum(np.exp(log_pmf - np.log(cdf)), 1.0)
    out: f8 = np.where(r >= 1.0, 1.0, b / np.maximum(1.0 - r * (1.0 - b), 1e-300))
    return np.clip(out, 0.0, 1.0)


def _burst_points(burstiness: float) -> tuple[f8, f8]:
    """(g, weight) of the expectation over the minute-rate multiplier (one point g = 1 when CV is 0)."""
    if burstiness <= 0:
        return np.ones(1), np.ones(1)
    k = 1.0 / burstiness ** 2
    q = (np.arange(QUANTILES) + 0.5) / QUANTILES
    g = gammaincinv(k, q) / k
    return g, np.full(QUANTILES, 1.0 / QUANTILES)


def wait_miss(servers: ArrayLike, service_s: ArrayLike, budget_s: ArrayLike, rho: ArrayLike,
              burstiness: float = 0.0) -> f8:
    """Share of requests that wait longer than ``budget_s`` (module docstring), elementwise."""
    c, s, t, r = (np.asarray(x, dtype=np.float64) for x in (servers, service_s, budget_s, rho))
    c, s, t, r = np.broadcast_arrays(c, s, t, r)
    g, w = _burst_points(burstiness)
    rg = r[..., None] * g  # [..., G]
    cg, sg, tg = c[..., None], s[..., None], np.maximum(t, 0.0)[..., None]  # the clamped budget, [..., 1]
    p = erlang_c(np.broadcast_to(cg, rg.shape).astype(np.int64), np.minimum(rg, 1.0)) \
        * np.exp(-(cg / sg) * np.maximum(1.0 - rg, 0.0) * tg)
    p = np.where((rg >= 1.0) | (t[..., None] < 0.0), 1.0, p)  # a negative budget: every request misses
    out: f8 = (p * (w * g)).sum(axis=-1) / float(np.sum(g * w))
    return out


def max_utilization(servers: ArrayLike, service_s: ArrayLike, budget_s: ArrayLike, *, tail: float,
                    burstiness: float = 0.0, cap: float = 1.0) -> f8:
    """Largest utilisation (<= ``cap``) at which at most ``tail`` of requests wait past ``budget_s``.

    0 where even an idle deployment misses (the budget is negative: prefill alone is over the target).
    """
    c, s, t = (np.asarray(x, dtype=np.float64) for x in (servers, service_s, budget_s))
    c, s, t = np.broadcast_arrays(c, s, t)
    lo, hi = np.zeros(c.shape), np.full(c.shape, float(cap))
    ok_hi = wait_miss(c, s, t, hi, burstiness) <= tail
    for _ in range(STEPS):
        mid = (lo + hi) / 2.0
        ok = wait_miss(c, s, t, mid, burstiness) <= tail
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    out: f8 = np.where(ok_hi, float(cap), np.where(t >= 0, lo, 0.0))
    return out
