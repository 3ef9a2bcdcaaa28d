"""Scripted experts, by task name."""

from dexstack.sim.experts.pick_lift import PickLiftExpert

EXPERTS = {"pick_lift": PickLiftExpert}

from dexstack.sim.experts.memory import CoverPickExpert, CueChoiceExpert  # noqa: E402

EXPERTS["cover_pick"] = CoverPickExpert
EXPERTS["cue_choice"] = CueChoiceExpert
