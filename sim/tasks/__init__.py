"""Task registry: task name -> task class.

A task's `robot` names the profile whose scene it runs on: the Panda tasks are constructed with
the Panda scene's model, data and names (`sim/core.py`), `grasp` with the hand sim
(`sim/hand_core.py`).
"""

from dexstack.sim.tasks.cover_pick import CoverPickTask
from dexstack.sim.tasks.cue_choice import CueChoiceTask
from dexstack.sim.tasks.grasp import GraspTask
from dexstack.sim.tasks.pick_lift import PickLiftTask

# cover_pick and cue_choice need memory (issue 3): the current frame alone does not tell what to do.
TASKS = {task.name: task for task in (PickLiftTask, CoverPickTask, CueChoiceTask, GraspTask)}


def get_task_class(name: str):
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}") from None
