"""The compiled world: the scenario with its shocks applied, as arrays over named dims, and its tables.

May import sovcloud.physics, sovcloud.policy, sovcloud.scenario and the foundation.
"""
