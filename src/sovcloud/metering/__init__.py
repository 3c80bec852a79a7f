"""Metering: tenants and API keys, the token/US$ ledger (SQLite or PostgreSQL), leases and the journal.

May import the foundation only; never plan, sim, report or gateway.
"""
