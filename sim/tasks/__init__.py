"""Task registry: task name -> task class (constructed with model, data and scene names)."""

from dexstack.sim.tasks.pick_lift import PickLiftTask

TASKS = {PickLiftTask.name: PickLiftTask}


def get_task_class(name: str):
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}") from None

# Tasks that need memory (issue 3): the current frame alone does not tell what to do.
from dexstack.sim.tasks.cover_pick import CoverPickTask  # noqa: E402
from dexstack.sim.tasks.cue_choice import CueChoiceTask  # noqa: E402

TASKS[CoverPickTask.name] = CoverPickTask
TASKS[CueChoiceTask.name] = CueChoiceTask
