"""The simulator's new_scope_use labels: a scope an instance uses "for the first time" was never used before.

Two instances of a run once drew the same over-permissioned key and the same unused scope, so the second was
labelled a first use of a scope its key had used hours before (no detector can see a first use twice).
"""

from __future__ import annotations

import pytest

from streams.simulator.run import Simulation


@pytest.mark.parametrize("world_seed", [32, 42, 53, 57, 58])  # worlds where the two instances collided
def test_new_scope_use_instances_of_a_run_use_different_key_scope_pairs(world_seed):
    sim = Simulation(seed=world_seed, world_seed=world_seed, events=2_000, days=5, instances=2,
                     scenarios=["new_scope_use"])
    pairs = [(lab["entities"][0]["id"], lab["description"].split("scope ")[1].split(" ")[0])
             for lab in sim.labels() if lab["scenario"] == "new_scope_use"]
    assert len(pairs) == 2 and len(set(pairs)) == 2


def test_the_default_run_labels_each_first_use_once():
    sim = Simulation(seed=7, events=2_000, days=3, instances=3, scenarios=["new_scope_use"])
    pairs = [(lab["entities"][0]["id"], lab["description"].split("scope ")[1].split(" ")[0])
             for lab in sim.labels()]
    assert len(pairs) == 3 and len(set(pairs)) == 3
