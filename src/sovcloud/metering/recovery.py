"""Recovery of a leasing gateway instance after a crash: its journal replayed into the database.

Durability (:mod:`sovcloud.metering.journal`): ``R`` (reservation, with its parts) is journaled before the
request goes upstream, ``P`` (progress mark ``m = min(max_tokens, n + B - 1)``, once per ``B`` streamed
tokens) before a chunk bringing delivery to ``n`` is forwarded, ``S`` (settlement) before a non-streamed
body is sent, ``X`` on release. After ``kill -9``, :func:`recover` (run at start-up, before serving) first
recovers the instance's strict reservations (:meth:`~sovcloud.metering.ledger.Ledger.recover`), then
replays the journal (:func:`replay`): settled requests are charged as settled (unless the database
already has them: a charge is idempotent by request id), open ones at ``prompt + m`` when ``m > 0`` (so
``delivered <= charged <= delivered + B``, as in :mod:`sovcloud.metering.ledger`), released or unmarked
ones not at all; then every open lease of the instance is closed and the old journal segments deleted.
Nothing delivered is ever lost, and nothing is charged twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sovcloud.errors import LedgerError
from sovcloud.metering.journal import Journal
from sovcloud.metering.ledger import Ledger
from sovcloud.metering.pricing import split
from sovcloud.metering.records import Charge, Op

__all__ = ["recover", "replay"]


def recover(ledger: Ledger, journal: Journal, instance_id: str) -> int:
    """Settle what a crashed run of ``instance_id`` left (strict reservations, then the journal's requests)
    and close its leases. Returns how many requests were recovered; a LedgerError when one cannot be."""
    recovered = ledger.recover()
    ops = replay(journal.read(), instance_id)
    tenants = ledger.query("SELECT DISTINCT tenant_id FROM ledger_leases WHERE state=0 AND instance_id=?",
                           (instance_id,))
    closes = [Op("close", "C" + ledger.new_id(), t, instance_id=instance_id) for (t,) in tenants]
    for res in ledger.apply(ops + closes):
        if isinstance(res, BaseException):
            raise LedgerError(f"recovery of instance {instance_id!r} failed: {res}") from res
    journal.forget_old()
    return recovered + len(ops)


def replay(records: Iterable[dict[str, Any]], instance_id: str) -> list[Op]:
    """The charges the journal ``records`` call for, in the order their requests were reserved: settled
    requests at their settlement, open ones at their last progress mark; none for released or unmarked."""
    state: dict[str, dict[str, Any]] = {}
    for rec in records:
        rid, kind = rec.get("id"), rec.get("k")
        if kind == "R":
            state[str(rid)] = {"r": rec, "mark": 0, "s": None, "x": False}
        elif str(rid) in state:
            st = state[str(rid)]
            if kind == "P":
                st["mark"] = max(st["mark"], int(rec["n"]))
            elif kind == "S":
                st["s"] = rec
            elif kind == "X":
                st["x"] = True
    ops = []
    for rid, st in state.items():
        r, s = st["r"], st["s"]
        if st["x"] or (s is None and st["mark"] <= 0):
            continue  # released, or nothing was delivered
        if s is not None:
            prompt, completion, parts, credit = int(s["p"]), int(s["c"]), s["g"], int(s["cr"])
        else:
            prompt, completion, parts, credit = int(r["p"]), min(st["mark"], int(r["x"])), r["g"], int(r["c"])
        parts = [(int(g), int(t)) for g, t in parts]
        pin, pout = int(r["pi"]), int(r["po"])
        sp = split(parts, credit, prompt, completion, pin, pout)
        charge = Charge(int(r["p"]), int(r["x"]), tuple(parts), credit, tuple(sorted(sp.used.items())), sp.money,
                        sp.rp, sp.rc, st["mark"], s is None, float(r["ts"]))
        ops.append(Op("charge", rid, str(r["t"]), prompt, completion, str(r["m"]), str(r["q"]), pin, pout,
                      instance_id, extra=charge))
    return ops
