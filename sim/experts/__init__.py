"""Scripted experts, by task name.

`EXPERTS` holds the Panda tasks' experts, which act on what the sim publishes (the expert node
runs them through ROS). The grasp task's scripted expert (`grasp.py`, `ScriptedGraspDemo`) acts
in the G-PAYN env's action space from the task's reset info, in-process.
"""

from dexstack.sim.experts.memory import CoverPickExpert, CueChoiceExpert
from dexstack.sim.experts.pick_lift import PickLiftExpert

EXPERTS = {"pick_lift": PickLiftExpert, "cover_pick": CoverPickExpert, "cue_choice": CueChoiceExpert}
