"""Policy as masks: data residency, export control and screening over (zone, site) and (chip, site).

May import sovcloud.scenario and the foundation.
"""
