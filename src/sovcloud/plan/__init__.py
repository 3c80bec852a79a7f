"""The multi-year buildout plan: inputs, the linopy model, the HiGHS solver, the greedy baseline, plan files.

May import sovcloud.world and below; never routing, sim, report, metering or gateway.
"""
