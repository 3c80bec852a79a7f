"""The simulator: traffic and traces replayed through a plan's backends under shocks, with metrics and outputs.

May import sovcloud.routing and below; never report, metering or gateway.
"""
