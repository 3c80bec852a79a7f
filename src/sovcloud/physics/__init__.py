"""The physics: network latency, inference performance (roofline, calibration, omni), energy, water, carbon.

May import the scenario schema (sovcloud.scenario.catalog) and the foundation (errors, vocab, geo); never the
scenario loader: functions take catalog entries, or a catalog (sovcloud.physics.catalog.Catalog) to resolve ids.
"""
