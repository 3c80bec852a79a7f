"""The physics: network latency, inference performance (roofline, calibration, omni), energy, water, carbon.

May import sovcloud.scenario and the foundation (errors, vocab, geo).
"""
