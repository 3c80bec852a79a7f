"""The HTML report: inputs read from plan and simulation files, charts, the world map, sources.

May import sovcloud.routing and below; never sim, metering or gateway.
"""
