"""Task registry: task name -> task class.

Which robot's scene each task runs on is `dexstack/tasks.json` (task -> profile name), a data
file so that `dexstack/graph.py` (core, which does not import the sim) reads the same list: the
Panda tasks are constructed with the Panda scene's model, data and names (`sim/core.py`), `grasp`
with the hand sim (`sim/cores.py`).
"""

import json
from pathlib import Path

import dexstack
from dexstack.sim.tasks.cover_pick import CoverPickTask
from dexstack.sim.tasks.cue_choice import CueChoiceTask
from dexstack.sim.tasks.grasp import GraspTask
from dexstack.sim.tasks.pick_lift import PickLiftTask

# cover_pick and cue_choice need memory (issue 3): the current frame alone does not tell what to do.
TASKS = {task.name: task for task in (PickLiftTask, CoverPickTask, CueChoiceTask, GraspTask)}
TASK_ROBOTS: dict[str, str] = json.loads((Path(dexstack.__file__).parent / "tasks.json").read_text())
if set(TASK_ROBOTS) != set(TASKS):
    raise RuntimeError(f"dexstack/tasks.json lists {sorted(TASK_ROBOTS)} but the registry has {sorted(TASKS)}")


def task_robot(name: str) -> str:
    """The profile name of the robot whose scene task `name` runs on."""
    get_task_class(name)
    return TASK_ROBOTS[name]


def get_task_class(name: str):
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}") from None
