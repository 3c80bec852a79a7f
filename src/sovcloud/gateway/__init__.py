"""The live OpenAI-compatible gateway: HTTP app, request schema, upstream client, streaming, metrics, emulator.

May import sovcloud.metering, sovcloud.routing and below; never sim or report.
"""
