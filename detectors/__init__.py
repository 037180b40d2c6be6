"""The scoring engine: feature kernels, online models and detector families over decoded event batches.

It knows nothing about Kafka or ClickHouse; the worker, the replay command and the
benchmarks all drive the same engine. ``registry.py`` declares what a detector family is,
``families/`` holds them, ``engine.py`` runs them; ``base.py`` holds the detector protocol.
"""
