"""Rewrite the behaviour fixture (only when a change is meant to alter detection)."""

from tests.golden import write

write()
