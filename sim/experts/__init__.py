"""Scripted experts, by task name."""

from dexstack.sim.experts.pick_lift import PickLiftExpert

EXPERTS = {"pick_lift": PickLiftExpert}
