"""Task registry: task name -> task class (constructed with model, data and scene names)."""

from dexstack.sim.tasks.pick_lift import PickLiftTask

TASKS = {PickLiftTask.name: PickLiftTask}


def get_task_class(name: str):
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}") from None
