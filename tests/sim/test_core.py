"""The serving engine against queueing theory (Erlang C, Pollaczek-Khinchine) and against SimPy."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from sovcloud.sim.core import Engine, erlang_c_wait, fcfs_starts, pollaczek_khinchine_wait


def _mean_wait(arrivals: np.ndarray, service: np.ndarray, servers: int, warmup: float = 0.02) -> float:
    starts = fcfs_starts(arrivals, service, servers)
    skip = int(len(arrivals) * warmup)
    return float((starts - arrivals)[skip:].mean())


def test_erlang_c_formula_known_values() -> None:
    # M/M/1: Wq = rho / (mu - lambda); M/M/2 at a = 1: C = 1/3, Wq = C / (2 mu - lambda) = 1/3
    assert erlang_c_wait(0.5, 1.0, 1) == pytest.approx(1.0)
    assert erlang_c_wait(1.0, 1.0, 2) == pytest.approx(1.0 / 3.0)
    assert erlang_c_wait(2.0, 1.0, 2) == float("inf")
    assert pollaczek_khinchine_wait(0.5, 1.0) == pytest.approx(0.5)


@pytest.mark.slow
@pytest.mark.parametrize(("servers", "rho"), [(8, 0.85), (2, 0.7)])
def test_mmc_mean_wait_matches_erlang_c_within_2_percent(servers: int, rho: float) -> None:
    rng = np.random.default_rng(20251)
    n, mu = 2_000_000, 1.0
    lam = rho * servers * mu
    arrivals = np.cumsum(rng.exponential(1.0 / lam, n))
    service = rng.exponential(1.0 / mu, n)
    measured = _mean_wait(arrivals, service, servers)
    theory = erlang_c_wait(lam, 1.0 / mu, servers)
    assert measured == pytest.approx(theory, rel=0.02)
    # the check can fail: one server fewer, or 5 % more load, is far outside the tolerance
    assert abs(measured / erlang_c_wait(lam * 1.05, 1.0 / mu, servers) - 1.0) > 0.02
    assert abs(measured / erlang_c_wait(lam, 1.0 / mu, servers + 1) - 1.0) > 0.02


def test_md1_mean_wait_matches_pollaczek_khinchine_within_2_percent() -> None:
    rng = np.random.default_rng(7)
    n, d, lam = 2_000_000, 1.0, 0.8
    arrivals = np.cumsum(rng.exponential(1.0 / lam, n))
    measured = _mean_wait(arrivals, np.full(n, d), 1)
    assert measured == pytest.approx(pollaczek_khinchine_wait(lam, d), rel=0.02)
    # exponential service (M/M/1) waits twice as long: the test tells them apart
    assert abs(measured / erlang_c_wait(lam, d, 1) - 1.0) > 0.4


def _simpy_starts(arrivals: np.ndarray, service: np.ndarray, servers: int) -> np.ndarray:
    env = simpy.Environment()
    res = simpy.Resource(env, capacity=servers)
    starts = np.zeros(len(arrivals))

    def request(i: int):  # type: ignore[no-untyped-def]
        yield env.timeout(arrivals[i] - env.now)
        with res.request() as req:
            yield req
            starts[i] = env.now
            yield env.timeout(service[i])

    def source():  # type: ignore[no-untyped-def]
        for i in range(len(arrivals)):
            yield env.timeout(arrivals[i] - env.now)
            env.process(request(i))

    env.process(source())
    env.run()
    return starts


def test_engine_start_times_equal_simpy_fcfs_queue() -> None:
    rng = np.random.default_rng(3)
    n, servers = 20_000, 4
    arrivals = np.cumsum(rng.exponential(1.0 / 3.4, n))
    service = rng.exponential(1.0, n)
    ours = fcfs_starts(arrivals, service, servers)
    np.testing.assert_allclose(ours, _simpy_starts(arrivals, service, servers), rtol=0, atol=1e-6)


def _engine(slots: int, replicas: float, tpot1: float = 0.0, horizon: float = 100.0, pool: int = 1000) -> Engine:
    one = np.ones(1)
    return Engine.create(slots=np.array([slots]), replicas=np.array([replicas]), prefill_tokens_per_s=one * 1000.0,
                         tpot0_s=one * 0.01, tpot1_s=one * tpot1, max_batch=one * slots / replicas,
                         b_site=np.zeros(1, np.int64), rtt_s=np.zeros((1, 1)), slo=np.full((4, 1), np.inf),
                         n_sites=1, horizon_s=horizon, pool_size=pool, track=pool)


def _serve(eng: Engine, t: np.ndarray, first_id: int = 0, out_tokens: float = 100.0) -> np.ndarray:
    n = len(t)
    z = np.zeros(n, np.int64)
    starts = np.zeros(n)
    eng.serve(t.astype(float), z, z, np.full(n, 100.0), np.full(n, out_tokens),
              np.arange(first_id, first_id + n, dtype=np.int64), z, z, z, starts)
    return starts


def test_tpot_grows_with_the_batch_in_service() -> None:
    eng = _engine(slots=8, replicas=1.0, tpot1=0.001)
    _serve(eng, np.zeros(8))
    # request k starts with k others in service: service = 0.1 s prefill + 100 x (0.01 + 0.001 (k + 1))
    ends = np.sort(eng.hk[: eng.sc[0]])
    np.testing.assert_allclose(ends, 0.1 + 100 * (0.01 + 0.001 * np.arange(1, 9)))


def test_outage_loses_pending_requests_and_conserves_counts() -> None:
    eng = _engine(slots=2, replicas=2.0)
    _serve(eng, np.array([0.0, 0.1, 0.2, 0.3]))  # 2 in service, 2 queued, each 1.1 s
    eng.fail(np.array([True]), 0.5)
    assert eng.cz[3].sum() == 4 and eng.inflight[0] == 0 and eng.bn[0] == 0
    _serve(eng, np.array([1.0]), first_id=4)
    eng.finish()
    served, lost = int(eng.cz[1].sum()), int(eng.cz[3].sum())
    assert (served, lost, int(eng.cz[0].sum())) == (1, 4, 5)
    assert list(eng.outcome[:5]) == [2, 2, 2, 2, 1]
    # busy time after the outage is taken back: 0.5 s and 0.4 s before it (queued ones never ran), 1.1 s after
    assert eng.hb[2, 0, 0] == pytest.approx(0.5 + 0.4 + 1.1)


def test_capacity_cut_drains_gracefully() -> None:
    eng = _engine(slots=4, replicas=4.0)
    _serve(eng, np.zeros(4))  # four in service until 1.1 s
    eng.set_capacity(np.array([1]), np.array([1.0]))
    starts = _serve(eng, np.array([0.5, 0.6]), first_id=4)
    # with one slot left, the first waits for all four to drain, the second for the first
    np.testing.assert_allclose(starts, [1.1, 2.2])
    eng.finish()
    assert eng.cz[1].sum() + eng.cz[4].sum() == 6
