"""The scoring engine: feature kernels, online models and rules over decoded event batches.

It knows nothing about Kafka or ClickHouse; the worker, the replay command and the
benchmarks all drive the same engine. ``base.py`` holds the detector protocol.
"""
