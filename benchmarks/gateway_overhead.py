"""Gateway overhead: the same load straight to the emulator, through sovcloud, and through LiteLLM's proxy.

Processes (each its own): the emulator in fixed-latency mode (50 ms per answer; a stream is 20 one-token
events 5 ms apart, like the reference mock of the anchors), a minimal pass-through (Starlette + aiohttp client
+ uvloop, no features: the floor on this machine, run in the same session), the sovcloud gateway (uvloop, one
worker, SQLite ledger, ``--metering`` leased (default) or strict, one tenant with a 10^12-token grant,
request logs on), LiteLLM's proxy (master key, no database, one worker) when ``--litellm`` names its executable, and
the load generator (this script with ``--loadgen``; its HTTP client is aiohttp's, the client the gateway
uses upstream). For each concurrency and mode it measures the targets in ``--rounds``
interleaved rounds (direct, pass-through, sovcloud, LiteLLM, then again), each round a fresh load generator
with its warm-up first (``--warmup`` requests, and at least each connection's first ``--warmup-per-conn``),
``--requests`` per target in all (``--litellm-requests`` for LiteLLM, which is slow); latencies are pooled over
the rounds.

The emulator, the load generator and the proxy under test share two CPUs, so the benchmark keeps its own
side light and its clocks honest: the emulator paces a stream's tokens by deadlines (a timer that fired
late does not push back every later token) and sends a stream's last events in one write; the load generator
runs with the garbage collector off; and a round during which the hypervisor stole more than
``--max-steal`` % of the machine's CPU time is run again (at most ``--steal-retries`` times; the table shows
each kept round's steal and how many were run again).

The load is closed-loop and steady: ``c`` connections, each sending its next request as soon as the previous
one is answered. The warm-up runs straight into the measured requests, with no pause between them. A pause (all
connections waiting for the warm-up's last answer, then starting together) would make the first ``c`` measured
requests one burst that a steady load never has: 64 of each round's 2,000 requests, 3 %, so the burst's
queueing *was* the p99 (the first 64 took 55-70 ms through sovcloud, the steady state's p99 was 56 ms).
For the same reason each connection's first request starts at a random offset in ``[0, --stagger-ms)``: the
emulator's answers all take the same time, so connections that start together stay in step, and how bunched a
round stayed moved its stream p50 by several ms. The load generator runs with its garbage collector off, so
that its own pauses are not timed as the target's latency.
Every connection's first ``--warmup-per-conn`` requests (default 3) are warm-up as well: a fresh load generator
opens all ``c`` connections within the stagger window, and their first answers carry that start. At c=256 the 300
requests of the old warm-up were 1.2 per connection, so the measured phase began inside it: a per-request trace
(one round of 2,300 requests per target) showed the connections' first answers at p99 125 ms (sovcloud) and 588 ms
(pass-through), their second ones at 82 and 123 ms and the later ones at 78 and 114 ms. With the old warm-up
sovcloud's c=256 plain round p99s were 92, 321 and 429 ms in one run; with this rule, in the next, 93, 88 and 68
ms.

It prints req/s, added p50/p99 latency (vs direct), added time to first chunk for streams, the server's CPU ms
per request (with its child processes, if any) and each round's p99, which shows how much of a tail is the
machine's noise.

    python benchmarks/gateway_overhead.py [--litellm /tmp/litellm-venv/bin/litellm] [--requests 3000]

LiteLLM goes in its own venv so it cannot disturb this project's dependencies:
``python3 -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install 'litellm[proxy]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = str(ROOT / "tests" / "data" / "tiny_a.yaml")
BACKEND = "de-fra/qwen3-8b/h100-sxm"
PASS_THROUGH = """
import sys, aiohttp, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
session = None
async def chat(request):
    global session
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    r = await session.post(sys.argv[1], data=await request.body(), headers={"Content-Type": "application/json"})
    if r.content_type != "text/event-stream":
        return Response(await r.read(), r.status, media_type=r.content_type)
    async def relay():
        async for chunk in r.content.iter_any():
            yield chunk
        r.release()
    return StreamingResponse(relay(), r.status, media_type="text/event-stream")
uvicorn.run(Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])]), host="127.0.0.1",
            port=int(sys.argv[2]), loop="uvloop", access_log=False, log_level="warning")
"""
BODY = {"model": "qwen3-8b", "messages": [{"role": "user", "content": "Say something about sovereign clouds."}],
        "max_tokens": 20}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Cores:
    """Which CPUs each side runs on. ``pinned``: the emulator and the load generator share one half of the
    machine's CPUs and the proxy under test (pass-through, sovcloud or LiteLLM) gets the other half, as a
    gateway has its own cores in production; the proxy's added latency is then its own work, not its theft
    of CPU from the load generator and the emulator. Unpinned: every process may run anywhere."""

    load: frozenset[int] | None = None
    proxy: frozenset[int] | None = None

    @classmethod
    def split(cls) -> Cores:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls()
        half = len(cpus) // 2
        return cls(frozenset(cpus[:half]), frozenset(cpus[half:]))

    def on(self, cpus: frozenset[int] | None) -> Callable[[], None] | None:
        """A ``preexec_fn`` that pins the child (and the threads it will start) to ``cpus``."""
        if cpus is None:
            return None
        return lambda: os.sched_setaffinity(0, cpus)

    def describe(self) -> str:
        if self.load is None or self.proxy is None:
            return "unpinned (every process on every CPU)"
        return (f"pinned: emulator and load generator on CPU {sorted(self.load)}, the proxy under test on CPU "
                f"{sorted(self.proxy)}")


def wait_http(url: str, timeout: float = 90.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    import urllib.error
    import urllib.request
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its live children (sovcloud's ledger process)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def cpu_times() -> tuple[float, float] | None:
    """(stolen, total) CPU seconds of the whole machine so far, from /proc/stat; None where there is none.
    *Steal* is time a virtual CPU wanted to run and the hypervisor ran something else: on this project's
    machine kind it reached 57 % in one round, which then took 3.4 s at p99 for every target alike."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    hz = os.sysconf("SC_CLK_TCK")
    return ticks[7] / hz, sum(ticks) / hz


def steal_share(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    """Percentage of the machine's CPU time stolen between two :func:`cpu_times` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


# ---- the load generator (runs in its own process) -------------------------------------------------
Fetch = Callable[[], Awaitable[tuple[bool, float | None]]]


@contextlib.asynccontextmanager
async def _client(url: str, key: str | None, stream: bool) -> AsyncIterator[Fetch]:
    """``fetch() -> (ok, time of the first body chunk)``: one request, read to its end, on aiohttp's client
    (one keep-alive pool, no connection cap)."""
    body = json.dumps({**BODY, "stream": stream}).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def aio() -> tuple[bool, float | None]:
            first = None
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    if stream:
                        async for _ in resp.content.iter_any():
                            if first is None:
                                first = time.perf_counter()
                    else:
                        await resp.read()
                    return resp.status == 200, first
            except (TimeoutError, aiohttp.ClientError):
                return False, first
        yield aio


async def _load(url: str, key: str | None, conc: int, total: int, warmup: int, stream: bool, stagger_s: float = 0.0,
                seed: int = 0, per_conn: int = 0) -> dict[str, object]:
    """``total`` measured requests after the warm-up: a request is warm-up while fewer than ``warmup`` were sent
    in all, or while its connection has sent fewer than ``per_conn`` before it."""
    lat: list[float] = []
    ttfc: list[float] = []
    errors = 0
    n = measured = 0
    t_start = t_end = 0.0
    async with _client(url, key, stream) as fetch:
        async def one(record: bool) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            ok, first = await fetch()
            t1 = time.perf_counter()
            if record:
                if not ok:
                    errors += 1
                    return
                lat.append(t1 - t0)
                if first is not None:
                    ttfc.append(first - t0)

        async def worker(delay: float) -> None:
            nonlocal n, measured, t_start, t_end
            await asyncio.sleep(delay)
            mine = 0
            while measured < total:
                n += 1
                mine += 1
                record = n > warmup and mine > per_conn
                if record:
                    measured += 1
                    if not t_start:
                        t_start = time.perf_counter()
                await one(record)
                if record:
                    t_end = time.perf_counter()

        delays = np.random.default_rng(seed).uniform(0.0, stagger_s, conc) if stagger_s > 0 else np.zeros(conc)
        await asyncio.gather(*(worker(float(d)) for d in delays))
        wall = t_end - t_start
    return {"rps": len(lat) / wall, "lat_ms": [x * 1000 for x in lat], "ttfc_ms": [x * 1000 for x in ttfc],
            "errors": errors, "sent": n}


def loadgen_main(a: argparse.Namespace) -> None:
    import uvloop
    # The instrument must not pause: with the collector on, a full collection over this process's modules
    # (numpy, aiohttp) stopped it for 29 ms in one c=64 stream round, late by that much on every answer then in
    # flight, whichever target was being measured. A round is a few thousand requests, so its garbage fits.
    gc.collect()
    gc.freeze()
    gc.disable()
    out = uvloop.run(_load(a.loadgen, a.key, a.concurrency_one, a.requests, a.warmup, a.stream, a.stagger_ms / 1000,
                           a.seed, a.warmup_per_conn))
    Path(a.out).write_text(json.dumps(out))


def run_load(url: str, key: str | None, conc: int, total: int, warmup: int, stream: bool,
             cores: Cores = Cores(), stagger_ms: float = 100.0, seed: int = 0,
             per_conn: int = 0) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--loadgen", url, "--concurrency-one", str(conc), "--requests", str(total),
           "--warmup", str(warmup), "--warmup-per-conn", str(per_conn), "--stagger-ms", str(stagger_ms),
           "--seed", str(seed)] + \
        (["--key", key] if key else []) + (["--stream"] if stream else [])
    # the figures come back in a file, not through a pipe: one c=256 run read back a stdout cut at 64 KiB
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "load.json"
        res = subprocess.run(cmd + ["--out", str(out)], capture_output=True, timeout=900,
                             preexec_fn=cores.on(cores.load))
        if res.returncode != 0 or not out.exists():
            raise RuntimeError(f"the load generator failed on {url} (exit {res.returncode}):\n"
                               f"{res.stderr.decode()[-3000:]}")
        data: dict[str, Any] = json.loads(out.read_text())
    return data


# ---- the servers ------------------------------------------------------------------------------------
@contextlib.contextmanager
def servers(work: Path, litellm: str | None, overlap: bool = False, metering: str = "leased",
            cores: Cores = Cores(), settings: dict[str, Any] | None = None
            ) -> Iterator[dict[str, tuple[str, str | None, int | None]]]:
    from sovcloud.gateway.emulator import write_fixed_plan
    from sovcloud.metering.ledger import Ledger
    from sovcloud.metering.tenants import Tenant, TenantStore
    plan = write_fixed_plan(work / "plan.json", SCENARIO, [("de-fra", "h100-sxm", "qwen3-8b", 8, 1)])
    ledger = f"sqlite:///{work / 'ledger.db'}"
    with TenantStore.open(ledger) as store:
        key = store.add(Tenant("bench", "bench", "z-de"))
    Ledger.open(ledger).grant("bench", 10**12, None)
    ep, gp = free_port(), free_port()
    cfg: dict[str, Any] = {"plan": str(plan), "ledger": ledger, "overlap_reservation": overlap,
                           "metering": {"mode": metering},
                           "upstreams": {"default_url": f"http://127.0.0.1:{ep}/{{backend}}/v1"}}
    for dotted, value in (settings or {}).items():  # --gw-set metering.write_behind_ms=100
        *path, leaf = dotted.split(".")
        node = cfg
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    (work / "gw.yaml").write_text(json.dumps(cfg))
    procs: list[subprocess.Popen[bytes]] = []
    logs = [open(work / f"{n}.log", "wb") for n in ("emulator", "gateway", "litellm", "pass")]  # noqa: SIM115
    try:
        cli = [sys.executable, "-m", "sovcloud.cli"]
        emu = subprocess.Popen(cli + ["emulate", "--plan", str(plan), "--port", str(ep), "--fixed-ms", "50",
                                      "--chunks", "20", "--chunk-ms", "5"], stdout=logs[0], stderr=logs[0],
                               preexec_fn=cores.on(cores.load))
        procs.append(emu)
        direct = f"http://127.0.0.1:{ep}/{BACKEND}/v1"
        wait_http(direct + "/models", proc=emu)  # before the gateway starts, so its first health check passes
        gw = subprocess.Popen(cli + ["serve", "--config", str(work / "gw.yaml"), "--port", str(gp)],
                              stdout=logs[1], stderr=logs[1], preexec_fn=cores.on(cores.proxy))
        procs.append(gw)
        wait_http(f"http://127.0.0.1:{gp}/health", proc=gw)
        pp = free_port()
        (work / "pass.py").write_text(PASS_THROUGH)
        pt = subprocess.Popen([sys.executable, str(work / "pass.py"), direct + "/chat/completions", str(pp)],
                              stdout=logs[3], stderr=logs[3], preexec_fn=cores.on(cores.proxy))
        procs.append(pt)
        targets: dict[str, tuple[str, str | None, int | None]] = {
            "direct": (direct + "/chat/completions", None, emu.pid),
            "pass-through": (f"http://127.0.0.1:{pp}/v1/chat/completions", None, pt.pid),
            "sovcloud": (f"http://127.0.0.1:{gp}/v1/chat/completions", key, gw.pid)}
        if litellm:
            lp = free_port()
            master = "sk-bench-" + os.urandom(16).hex()  # LiteLLM refuses to start without one; no database
            lcfg = {"model_list": [{"model_name": "qwen3-8b", "litellm_params": {
                "model": "openai/qwen3-8b", "api_base": direct, "api_key": "none"}}],
                "general_settings": {"master_key": master}}
            (work / "litellm.yaml").write_text(json.dumps(lcfg))
            lt = subprocess.Popen([litellm, "--config", str(work / "litellm.yaml"), "--port", str(lp),
                                   "--num_workers", "1"], stdout=logs[2], stderr=logs[2],
                                  preexec_fn=cores.on(cores.proxy))
            procs.append(lt)
            wait_http(f"http://127.0.0.1:{lp}/health/liveliness", timeout=180, proc=lt)
            targets["litellm"] = (f"http://127.0.0.1:{lp}/v1/chat/completions", master, lt.pid)
        yield targets
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in logs:
            f.close()


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q)) if xs else float("nan")


def measure(targets: dict[str, tuple[str, str | None, int | None]], conc: int, stream: bool,
            a: argparse.Namespace, cores: Cores) -> dict[str, dict[str, Any]]:
    """Every target under one load, in ``a.rounds`` interleaved rounds (direct, pass-through, sovcloud, ...,
    then again), so that a drift of the machine (another process, the emulator warming up) falls on every
    target alike; each round is a fresh load-generator process with its own warm-up. A round during which
    more than ``a.max_steal`` % of the machine's CPU time was stolen by the hypervisor is run again (at most
    ``a.steal_retries`` times; the rounds run again are kept in ``rerun``, the steal of the kept rounds in
    ``steal_pct``). Latencies are pooled over the rounds; req/s is the pooled requests over the pooled wall
    time."""
    acc: dict[str, dict[str, Any]] = {
        n: {"lat_ms": [], "ttfc_ms": [], "errors": 0, "wall": 0.0, "cpu_s": 0.0, "sent": 0, "rounds": 0,
            "round_p50": [], "round_p99": [], "steal_pct": [], "rerun": []} for n in targets}
    for rnd in range(a.rounds):
        for name, (url, key, pid) in targets.items():
            total = a.litellm_requests if name == "litellm" else a.requests
            total = max(1, total // a.rounds)
            # LiteLLM is slow, so its warm-up is shorter; every target's connections each send their first
            # --warmup-per-conn requests as warm-up too (the start of a round is not steady state, see the doc)
            warm = min(a.warmup, total // 10) if name == "litellm" else a.warmup
            x = acc[name]
            for attempt in range(a.steal_retries + 1):
                cpu0 = cpu_seconds(pid) if pid else 0.0
                t0 = cpu_times()
                r = run_load(url, key, conc, total, warm, stream, cores, a.stagger_ms, seed=rnd,
                             per_conn=a.warmup_per_conn)
                stolen = steal_share(t0, cpu_times())
                if stolen is None or stolen <= a.max_steal or attempt == a.steal_retries:
                    break
                # the hypervisor took the CPUs away during this round: it measured the host, not the target
                x["rerun"].append({"round": rnd, "steal_pct": round(stolen, 1),
                                   "p99_ms": round(pct(r["lat_ms"], 99), 1)})
            x["steal_pct"].append(round(stolen, 1) if stolen is not None else None)
            x["cpu_s"] += cpu_seconds(pid) - cpu0 if pid else 0.0
            x["sent"] += r["sent"]
            x["lat_ms"] += r["lat_ms"]
            x["ttfc_ms"] += r["ttfc_ms"]
            x["errors"] += r["errors"]
            x["wall"] += len(r["lat_ms"]) / r["rps"]
            x["rounds"] += 1
            x["round_p50"].append(round(pct(r["lat_ms"], 50), 2))
            x["round_p99"].append(round(pct(r["lat_ms"], 99), 2))
    for x in acc.values():
        x["rps"] = len(x["lat_ms"]) / x["wall"]
        x["cpu"] = x["cpu_s"] / x["sent"] * 1000 if x["sent"] else float("nan")
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--litellm", help="path of LiteLLM's `litellm` executable (its own venv)")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=300, help="warm-up requests per round, at least (default 300)")
    ap.add_argument("--warmup-per-conn", type=int, default=3,
                    help="each connection's first requests of a round are warm-up too (default 3; 0: only --warmup). "
                         "A connection's first answer carries the round's start: 256 new connections at once")
    ap.add_argument("--stagger-ms", type=float, default=100.0,
                    help="each connection's first request starts at a random offset in [0, this) (default 100 ms: "
                         "about one answer's time, so the connections are out of step; 0: all start together)")
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--litellm-requests", type=int, default=1000, help="requests per LiteLLM run (it is slow)")
    ap.add_argument("--concurrency", default="16,64,256")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds per load; --requests is split over them (default 3)")
    ap.add_argument("--max-steal", type=float, default=1.0,
                    help="run a round again when more than this %% of the machine's CPU time was stolen by the "
                         "hypervisor during it (default 1.0; see /proc/stat)")
    ap.add_argument("--steal-retries", type=int, default=2, help="at most this many runs again per round (default 2)")
    ap.add_argument("--no-pin", action="store_true",
                    help="let every process run on every CPU (default: the proxy under test on half the CPUs, the "
                         "emulator and the load generator on the other half)")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    ap.add_argument("--overlap", action="store_true", help="sovcloud with overlap_reservation: true")
    ap.add_argument("--metering", choices=("leased", "strict"), default="leased",
                    help="sovcloud's metering mode (leased: in memory + journal, database behind; strict: a "
                         "database commit per reservation and settlement)")
    ap.add_argument("--gw-set", action="append", default=[], metavar="KEY=JSON",
                    help="a setting of sovcloud's config, e.g. metering.write_behind_ms=100 or log_requests=false")
    ap.add_argument("--only", default="", help="comma-separated targets to measure (default: all)")
    ap.add_argument("--modes", default="plain,stream", help="plain, stream or both")
    ap.add_argument("--loadgen", help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    ap.add_argument("--concurrency-one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.loadgen:
        loadgen_main(a)
        return
    litellm = a.litellm
    if litellm and not Path(litellm).exists():
        print(f"note: {litellm} does not exist; install LiteLLM with python3 -m venv /tmp/litellm-venv && "
              "/tmp/litellm-venv/bin/pip install 'litellm[proxy]'. Measuring without it.")
        litellm = None
    elif not litellm:
        print("note: no --litellm given; measuring direct and sovcloud only.")
    rows = []
    only = {t for t in a.only.split(",") if t} | {"direct"}
    cores = Cores() if a.no_pin else Cores.split()
    settings: dict[str, Any] = {}
    for item in a.gw_set:
        k, sep, v = item.partition("=")
        if not sep:
            ap.error(f"--gw-set {item!r}: expected KEY=VALUE, e.g. log_requests=false")
        try:
            settings[k] = json.loads(v)
        except json.JSONDecodeError:
            settings[k] = v
    print(f"cores: {cores.describe()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, servers(Path(tmp), litellm, a.overlap, a.metering, cores,
                                                             settings) as targets:
        chosen = {n: t for n, t in targets.items() if len(only) == 1 or n in only}
        for conc in (int(c) for c in a.concurrency.split(",")):
            for stream in [m == "stream" for m in a.modes.split(",")]:
                runs = measure(chosen, conc, stream, a, cores)
                base = runs["direct"]
                for name, r in runs.items():
                    lat, ttfc, bl, bt = r["lat_ms"], r["ttfc_ms"], base["lat_ms"], base["ttfc_ms"]
                    row = {"target": name, "concurrency": conc, "stream": stream, "rps": r["rps"],
                           "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                           "added_p50_ms": pct(lat, 50) - pct(bl, 50), "added_p99_ms": pct(lat, 99) - pct(bl, 99),
                           "added_ttfc_p50_ms": pct(ttfc, 50) - pct(bt, 50) if stream else None,
                           "cpu_ms_per_req": r["cpu"], "errors": r["errors"], "rounds": r["rounds"],
                           "round_p50_ms": r["round_p50"], "round_p99_ms": r["round_p99"],
                           "steal_pct": r["steal_pct"], "rerun": r["rerun"]}
                    rows.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "round_p50_ms"}), flush=True)
    print()
    print("| target | conc | mode | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | added TTFC p50 ms "
          "| CPU ms/req | errors | p99 ms by round | steal % by round | rounds run again |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ttfc = f"{r['added_ttfc_p50_ms']:+.1f}" if r["added_ttfc_p50_ms"] is not None else "-"
        added = (f"{r['added_p50_ms']:+.2f} | {r['added_p99_ms']:+.1f}" if r["target"] != "direct" else "- | -")
        print(f"| {r['target']} | {r['concurrency']} | {'stream' if r['stream'] else 'plain'} | {r['rps']:.0f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {added} | {ttfc if r['target'] != 'direct' else '-'} | "
              f"{r['cpu_ms_per_req']:.2f} | {r['errors']} | {' / '.join(f'{x:.0f}' for x in r['round_p99_ms'])} | "
              f"{' / '.join('-' if x is None else f'{x:.1f}' for x in r['steal_pct'])} | {len(r['rerun'])} |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
