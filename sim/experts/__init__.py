"""Scripted experts, by task name."""

from dexstack.sim.experts.memory import CoverPickExpert, CueChoiceExpert
from dexstack.sim.experts.pick_lift import PickLiftExpert

EXPERTS = {"pick_lift": PickLiftExpert, "cover_pick": CoverPickExpert, "cue_choice": CueChoiceExpert}
