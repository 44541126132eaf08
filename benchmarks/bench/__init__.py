"""The parts of `benchmarks/throughput.py`, importable as `bench` from `benchmarks/`.

common: paths, machine, versions, scratch folders, child processes. timing: `StepTimer`,
the Lightning callback added to a run through its config. loops: the three training paths
(a) project, (b) bare, (c) tutorial. part_throughput, part_startup, part_memory: one
benchmark each. report: the Markdown.
"""
