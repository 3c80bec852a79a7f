"""The one routing core: a plan's backends and the residency-safe router used by sim and gateway alike.

May import sovcloud.plan (its file format) and below.
"""
