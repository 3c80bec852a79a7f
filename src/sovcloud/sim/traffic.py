"""Request traffic for the simulator: synthetic per zone, or a real trace spread over zones.

Synthetic (``--synthetic``). For every key k = (zone z, model m, workload w) with demand::

    rate[k, h]  = demand_tokens_per_h[z, m, w, period, h] / (I_w + O_w) / 3600 * sample   (requests/s)

at UTC hour h (the zone's local-time diurnal profile is already in the demand), a doubly stochastic
Poisson process: in each minute j the rate is multiplied by g[k, j] ~ Gamma(1/cv^2, cv^2) (mean 1,
coefficient of variation cv = ``burstiness``; cv = 0 is a plain Poisson process) and by the surge
factor of the zone, the count is Poisson and the arrival times uniform within the minute. Token
lengths are lognormal with the workload's mean (sigma 0.8 for prompts, 0.6 for completions),
rounded to whole tokens >= 1.

Trace replay (``--trace``). Row i arrives at ``t_i / trace_scale`` (``trace_scale`` multiplies the
rate); its key is drawn (seeded) from the demand shares ``rate[k, h] / sum_k rate[k, h]`` of the UTC
hour it falls in, so rows spread over zones, models and workloads in proportion to demand; prompt
and completion lengths are the trace's. Rows after the horizon are counted ``outside_window``; a
surge F copies a row floor(F) times plus once more with probability frac(F) (copies are counted
``surge_added``, rows dropped by F < 1 ``surge_thinned``), so every row is accounted for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sovcloud.sim.traces import Trace
from sovcloud.world.compiled import World

__all__ = ["DemandRates", "Requests", "TraceSpread", "spread_trace"]

f8 = NDArray[np.float64]
i8 = NDArray[np.int64]
SIGMA_IN, SIGMA_OUT = 0.8, 0.6


@dataclass(frozen=True)
class Requests:
    """Requests sorted by arrival time (seconds from the start); ``rid`` numbers them for tracking."""

    t: f8
    zone: i8
    model: i8
    workload: i8
    inp: f8
    out: f8
    rid: i8

    def __len__(self) -> int:
        return len(self.t)

    def take(self, idx: i8 | slice) -> Requests:
        return Requests(self.t[idx], self.zone[idx], self.model[idx], self.workload[idx], self.inp[idx],
                        self.out[idx], self.rid[idx])


@dataclass(frozen=True)
class DemandRates:
    """Request rates per (zone, model, workload) key and UTC hour, at full scale."""

    zone: i8  # [K]
    model: i8
    workload: i8
    rate: f8  # [K, 24] requests per second
    in_mean: f8  # [W]
    out_mean: f8  # [W]

    @classmethod
    def from_world(cls, world: World, period: int) -> DemandRates:
        wl = {w.id: w for w in world.scenario.workloads}
        dem = world.ds.demand_tokens_per_h.sel(period=period).transpose("zone", "model", "workload", "hour").values
        names = [str(w) for w in world.ds.workload.values]
        i_mean = np.array([wl[w].input_tokens for w in names], dtype=np.float64)
        o_mean = np.array([wl[w].output_tokens for w in names], dtype=np.float64)
        rate = dem / (i_mean + o_mean)[None, None, :, None] / 3600.0
        z, m, w = np.nonzero(rate.sum(axis=3) > 0)
        return cls(zone=z.astype(np.int64), model=m.astype(np.int64), workload=w.astype(np.int64),
                   rate=np.ascontiguousarray(rate[z, m, w]), in_mean=i_mean, out_mean=o_mean)

    def total_rate(self, start_hour: int, hours: float) -> float:
        """Mean full-scale arrival rate (requests/s) over ``hours`` from UTC hour ``start_hour``."""
        n = max(1, int(np.ceil(hours)))
        per_hour = self.rate.sum(axis=0)
        return float(np.mean(per_hour[(start_hour + np.arange(n)) % 24]))

    def tokens(self, workload: i8, rng: np.random.Generator) -> tuple[f8, f8]:
        """Lognormal prompt and completion lengths with each workload's mean, whole tokens >= 1."""
        mu_i = np.log(self.in_mean[workload]) - SIGMA_IN ** 2 / 2
        mu_o = np.log(self.out_mean[workload]) - SIGMA_OUT ** 2 / 2
        inp = np.maximum(1.0, np.rint(np.exp(mu_i + SIGMA_IN * rng.standard_normal(len(workload)))))
        out = np.maximum(1.0, np.rint(np.exp(mu_o + SIGMA_OUT * rng.standard_normal(len(workload)))))
        return inp, out

    def synthetic(self, t0: float, t1: float, *, sample: float, burstiness: float, start_hour: int,
                  surge: f8, rng: np.random.Generator, first_id: int = 0) -> Requests:
        """Arrivals in [t0, t1) (minute bins); ``surge`` is the ``[zone, bin]`` multiplier."""
        edges = np.append(np.arange(t0, t1, 60.0), t1)
        start, width = edges[:-1], np.diff(edges)
        hour = (start_hour + (start // 3600.0).astype(np.int64)) % 24
        lam = self.rate[:, hour] * sample * surge[self.zone] * width[None, :]  # [K, J]
        if burstiness > 0:
            shape = 1.0 / burstiness ** 2
            lam = lam * rng.gamma(shape, 1.0 / shape, size=lam.shape)
        counts = rng.poisson(lam).ravel()
        key = np.repeat(np.repeat(np.arange(len(self.zone)), len(start)), counts)
        b = np.repeat(np.tile(np.arange(len(start)), len(self.zone)), counts)
        t = start[b] + rng.random(len(b)) * width[b]
        order = np.argsort(t, kind="stable")
        key = key[order]
        wl = self.workload[key]
        inp, out = self.tokens(wl, rng)
        n = len(order)
        return Requests(t=t[order], zone=self.zone[key], model=self.model[key], workload=wl, inp=inp, out=out,
                        rid=np.arange(first_id, first_id + n, dtype=np.int64))


@dataclass(frozen=True)
class TraceSpread:
    """A trace turned into requests, with the accounting of every row."""

    requests: Requests
    row: i8  # trace row of each request (-1 for surge copies)
    rows: int
    outside_window: int
    surge_added: int
    surge_thinned: int


def spread_trace(trace: Trace, rates: DemandRates, *, scale: float, horizon_s: float, start_hour: int,
                 surge_of: Callable[[f8, i8], f8], rng: np.random.Generator) -> TraceSpread:
    """Requests of ``trace`` at ``scale`` times its rate, spread over keys in proportion to demand.

    ``surge_of(t, zone)`` is the arrival multiplier of each row (see :meth:`ShockTimeline.surge_rows`).
    """
    t = trace.t_s / scale
    inside = t < horizon_s
    t, rows = t[inside], trace.row[inside]
    inp, out = trace.input_tokens[inside], trace.output_tokens[inside]
    hour = (start_hour + (t // 3600.0).astype(np.int64)) % 24
    key = np.zeros(len(t), dtype=np.int64)
    for h in np.unique(hour):
        at = hour == h
        p = rates.rate[:, h] / rates.rate[:, h].sum()
        key[at] = rng.choice(len(p), size=int(at.sum()), p=p)
    zone = rates.zone[key]
    factor = surge_of(t, zone)
    copies = np.floor(factor).astype(np.int64) + (rng.random(len(t)) < factor - np.floor(factor))
    idx = np.repeat(np.arange(len(t)), copies)
    first = np.ones(len(idx), dtype=bool)
    first[1:] = idx[1:] != idx[:-1]
    reqs = Requests(t=t[idx], zone=zone[idx], model=rates.model[key[idx]], workload=rates.workload[key[idx]],
                    inp=inp[idx], out=out[idx], rid=np.arange(len(idx), dtype=np.int64))
    return TraceSpread(requests=reqs, row=np.where(first, rows[idx], -1), rows=trace.rows,
                       outside_window=int((~inside).sum()), surge_added=int(len(idx) - (copies > 0).sum()),
                       surge_thinned=int((copies == 0).sum()))
