"""The hand's `SimCoreProtocol` implementation, and `make_core`: the core a task runs on.

`HandCore` is what the sim node drives for the Adroit hand: the hand scene's physics
(`hand_core.HandSim`, one object), the grasp task (`tasks/grasp.py`: reset with the grasp planned
from the camera and the open hand at the pre-grasp; success) and chunk execution with
JointTrajectoryController semantics, as `core.SimCore` does for the Panda.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dexstack.hardware.profiles import ADROIT, RobotProfile, get_profile
from dexstack.sim.core import CheckedStepper, SimCore
from dexstack.sim.hand_core import HandSim
from dexstack.sim.protocol import SimCoreProtocol
from dexstack.sim.tasks import task_robot
from dexstack.sim.tasks.grasp import FIT_CAMERA_SIZE, GraspTask
from dexstack.trajectory import ActionChunk, TrajectoryExecutor

DEFAULT_OBJECT = "potted_meat_can"


class HandCore:
    """`SimCoreProtocol` over `HandSim` + `GraspTask` (see the module docstring)."""

    def __init__(
        self,
        task: str = GraspTask.name,
        profile: RobotProfile = ADROIT,
        render: bool = True,
        camera_size: tuple[int, int] | None = None,
        *,
        object_name: str = DEFAULT_OBJECT,
    ) -> None:
        if task != GraspTask.name or profile.name != ADROIT.name:
            raise ValueError(
                f"the hand core runs the {GraspTask.name!r} task on {ADROIT.name}, got {task!r} on {profile.name}"
            )
        spec = ADROIT.cameras[0]
        size = (spec.width, spec.height) if camera_size is None else tuple(camera_size)
        if size != FIT_CAMERA_SIZE or size != (spec.width, spec.height):
            # The grasp task plans from the scene camera at this size; another size would need a
            # second renderer whose pixels no longer match the mask.
            raise ValueError(
                f"the hand sim renders its {spec.name} camera at {spec.width}x{spec.height}, "
                f"got camera size {size[0]}x{size[1]}"
            )
        self.sim = HandSim(object_name, render=render, camera_size=FIT_CAMERA_SIZE)
        self.task = GraspTask(self.sim)
        self.profile = ADROIT
        self.dt = self.sim.dt
        self._camera = spec.name
        self.executor = TrajectoryExecutor(
            ADROIT.joint_names,
            np.asarray(ADROIT.home, dtype=float),
            interpolate_from_desired_state=ADROIT.jtc_interpolate_from_desired_state,
        )
        self._stepper = CheckedStepper(self.sim.model, self.sim.data)
        self.divergence: str | None = None  # why the physics diverged this episode (it stopped), or None
        self._t0 = 0.0
        self.plan: dict[str, Any] = {}  # the episode's planned grasp, or {"error": why there is none}

    # --- episode --------------------------------------------------------------------------
    @property
    def time(self) -> float:
        """Seconds of simulation time since the last reset, rounded to 1 ns: MuJoCo adds the 2 ms
        timestep to a float, so 2500 steps read 4.9999999999997 s and the sim node's
        `>= max_time_s` would run a 51st control tick where GraspEnv stops after 50."""
        return round(float(self.sim.data.time) - self._t0, 9)

    def reset(self, seed: int) -> str | None:
        """The grasp task's reset from `seed` (object placed, grasp planned, hand at the pre-grasp,
        as GraspEnv's); if no reachable grasp is found, the start pose with the object at its
        default spot, and the returned message says why."""
        try:
            info = self.task.reset(np.random.default_rng(int(seed)))
            grasp, pre = info["grasp_pose"], info["pregrasp_pose"]
            self.plan = {
                "grasp_position": grasp[0].tolist(),
                "grasp_quaternion": grasp[1].tolist(),
                "pregrasp_position": pre[0].tolist(),
                "error": "",
            }
        except RuntimeError as exc:
            self.sim.reset()
            self.task.grasp = None
            self.task.begin()
            self.plan = {"error": str(exc)}
        self._t0 = float(self.sim.data.time)
        self.divergence = None  # every reset path went through mj_resetData, which clears MuJoCo's counters
        # Hold what the servos are commanded to now, so the first step does not move anything.
        self.executor.reset(self.sim.targets())
        return f"no planned pre-grasp, starting at the start pose: {self.plan['error']}" if self.plan["error"] else None

    # --- commands -------------------------------------------------------------------------
    def submit(self, chunk: ActionChunk) -> int:
        """Execute `chunk` from now on; `TrajectoryRejected` for what JTC refuses (nothing changes)."""
        return self.executor.set_chunk(chunk, now=self.time, measured=self.sim.joint_state()[0])

    def hold(self) -> None:
        self.executor.hold(self.time)

    def step(self, n: int = 1) -> None:
        """Advance `n` physics steps, each tracking the executor's command (clipped to limits);
        after a divergence (`divergence`) nothing moves until `reset`."""
        for _ in range(n):
            if self.divergence is not None:
                return
            self.sim.set_targets(self.executor.sample(self.time))
            self.divergence = self._stepper.step()

    # --- state ----------------------------------------------------------------------------
    def joint_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.sim.joint_state()

    def sensors(self) -> dict[str, np.ndarray]:
        """ "tactile": (5,) normal force (N) per pad, `ADROIT.tactile_pads` order, from anything
        outside the hand."""
        return {"tactile": self.sim.pad_forces()}

    def object_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self.sim.object_pose()

    # --- camera ---------------------------------------------------------------------------
    @property
    def camera_names(self) -> tuple[str, ...]:
        return (self._camera,)

    def _check_camera(self, camera: str) -> None:
        if camera != self._camera:
            raise KeyError(f"no camera {camera!r}; cameras: [{self._camera!r}]")

    def render(self, camera: str) -> tuple[np.ndarray, np.ndarray]:
        self._check_camera(camera)
        return self.sim.render()

    def segmentation(self, camera: str) -> np.ndarray:
        self._check_camera(camera)
        return self.sim.segmentation()

    def camera_intrinsics(self, camera: str) -> tuple[float, float, float, float]:
        self._check_camera(camera)
        return self.sim.camera_intrinsics()

    def camera_pose(self, camera: str) -> np.ndarray:
        self._check_camera(camera)
        return self.sim.camera_pose()

    def close(self) -> None:
        self.sim.close()


def make_core(
    task: str,
    profile: str | None = None,
    render: bool = True,
    camera_size: tuple[int, int] | None = None,
    options: dict[str, Any] | None = None,
) -> SimCoreProtocol:
    """The core `task` runs on. profile: None or the task's robot (anything else is a
    ValueError); options: the task's options (the grasp task: `object`)."""
    robot = task_robot(task)
    if profile not in (None, robot):
        raise ValueError(f"task {task!r} runs on the {robot} profile, not {profile!r}")
    options = dict(options or {})
    if robot == ADROIT.name:
        core: SimCoreProtocol = HandCore(
            task, ADROIT, render, camera_size, object_name=options.pop("object", DEFAULT_OBJECT)
        )
    else:
        core = SimCore(task, get_profile(robot), render=render, camera_size=camera_size)
    if options:
        raise ValueError(f"task {task!r} takes no options {sorted(options)}")
    return core
