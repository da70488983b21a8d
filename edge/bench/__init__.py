"""Benchmarking a bundle (torch-free, runs on the device).

- ``measure``: the plan of backend x precision x decode rows, timed per stage.
- ``load``: the load average before and after, and whether ratios mean anything.
- ``system``: machine, versions, clocks and the matmul peak.
- ``report``: text, markdown, JSON and a plot of one benchmark run.
"""
