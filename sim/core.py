"""The one physics core shared by the ROS sim node and the in-process env.

`SimCore` owns the MuJoCo model and data, executes action chunks with
JointTrajectoryController semantics (`dexstack.trajectory.TrajectoryExecutor`: JTC's validation
and sampling) and renders the profile's cameras. Every physics step is checked for divergence
(`CheckedStepper`): the core then stops and reports why in `divergence` until the next `reset`. Time is simulation time in seconds since the last `reset`. Joint
vectors are in the profile's joint order: 7 arm joints (rad) then the gripper as one joint,
each finger's opening in metres (the sim drives both fingers from it).
"""

from __future__ import annotations

import weakref

import mujoco
import numpy as np

from dexstack.hardware.profiles import PANDA, RobotProfile
from dexstack.perception.camera import camera_intrinsics, optical_pose_from_mujoco
from dexstack.sim import scene as scene_lib
from dexstack.sim.render import RgbdRenderer
from dexstack.sim.tasks import get_task_class, task_robot
from dexstack.trajectory import ActionChunk, TrajectoryExecutor

SETTLE_STEPS = 50  # physics steps run at reset so the object rests on the table before t = 0

# MuJoCo's warnings for a state it cannot integrate (mj_checkPos / mj_checkVel / mj_checkAcc in
# engine_forward.c: a NaN, inf or > mjMAXVAL value, after which mj_step silently calls
# mj_resetData, unless mjDSBL_AUTORESET, so time jumps back and every joint goes to qpos0), and
# for a non-finite control (mj_fwdActuation: every control is then zero for that step).
DIVERGENCE_WARNINGS = (
    mujoco.mjtWarning.mjWARN_BADQPOS,
    mujoco.mjtWarning.mjWARN_BADQVEL,
    mujoco.mjtWarning.mjWARN_BADQACC,
    mujoco.mjtWarning.mjWARN_BADCTRL,
)


_BAD = slice(min(map(int, DIVERGENCE_WARNINGS)), max(map(int, DIVERGENCE_WARNINGS)) + 1)
assert len(DIVERGENCE_WARNINGS) == _BAD.stop - _BAD.start  # contiguous in mjtWarning


class CheckedStepper:
    """`mj_step` that reports divergence (`DIVERGENCE_WARNINGS` fired since the last
    `mj_resetData`, which clears the counters, or time ran backwards, which the automatic reset does).

    On divergence `data.time` is put back to its value before the step, so a clock read from it
    never runs backwards; the state in `data` is then meaningless (often the model's qpos0)."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        self.model, self.data = model, data
        self._counts = data.warning.number  # a live view of the C counters: cheap to read each step

    def step(self) -> str | None:
        """One physics step; returns why the physics diverged, or None."""
        d = self.data
        t0 = float(d.time)
        mujoco.mj_step(self.model, d)
        if d.time >= t0 and not self._counts[_BAD].any():
            return None
        reset = d.time < t0
        d.time = t0
        fired = [w for w in DIVERGENCE_WARNINGS if d.warning[w].number > 0]
        what = ", ".join(f"{w.name} (index {d.warning[w].lastinfo})" for w in fired) or "time ran backwards"
        consequence = "MuJoCo reset the state" if reset else "the controls were zeroed"
        return f"physics diverged at t={t0:.4f} s: {what}; {consequence}"


def _close_renderers(*renderer_sets: dict) -> None:
    for renderers in renderer_sets:
        for renderer in renderers.values():
            renderer.close()
        renderers.clear()


class SimCore:
    """MuJoCo physics + chunk execution + cameras for one task scene."""

    def __init__(
        self,
        task: str = "pick_lift",
        profile: RobotProfile = PANDA,
        render: bool = True,
        camera_size: tuple[int, int] | None = None,
        *,
        mesh_detail: str = "low",
    ) -> None:
        """camera_size: (width, height) for every camera, None = the profile's sizes;
        mesh_detail: "low" (fast, collision hulls) or "high" (detailed arm meshes) in images."""
        task_cls = get_task_class(task)
        if task_robot(task) != profile.name:
            raise ValueError(f"task {task!r} runs on the {task_robot(task)} profile, not {profile.name!r}")
        self.profile = profile
        if camera_size is not None and (len(camera_size) != 2 or min(camera_size) < 1):
            raise ValueError(f"camera_size must be (width, height) in pixels, got {camera_size}")
        root, self.names = scene_lib.build_scene(profile, camera_size=camera_size, mesh_detail=mesh_detail)
        self.model: mujoco.MjModel = scene_lib.compile_model(root)
        self.data = mujoco.MjData(self.model)
        self.dt: float = float(self.model.opt.timestep)
        m = self.model
        self._arm_qpos = np.array([m.jnt_qposadr[m.joint(j).id] for j in self.names.arm_joints])
        self._arm_dof = np.array([m.jnt_dofadr[m.joint(j).id] for j in self.names.arm_joints])
        self._finger_qpos = np.array([m.jnt_qposadr[m.joint(j).id] for j in self.names.finger_joints])
        self._finger_dof = np.array([m.jnt_dofadr[m.joint(j).id] for j in self.names.finger_joints])
        self._arm_act = np.array([m.actuator(a).id for a in self.names.arm_actuators])
        self._finger_act = np.array([m.actuator(a).id for a in self.names.finger_actuators])
        self._lower, self._upper = profile.lower, profile.upper
        self.executor = TrajectoryExecutor(
            profile.joint_names,
            np.asarray(profile.home),
            interpolate_from_desired_state=profile.jtc_interpolate_from_desired_state,
        )
        self.divergence: str | None = None  # why the physics diverged this episode (it stopped), or None
        self._stepper = CheckedStepper(self.model, self.data)
        self.task = task_cls(self.model, self.data, self.names)

        self._cam_size: dict[str, tuple[int, int]] = {}
        for cam in profile.cameras:
            self._cam_size[cam.name] = tuple(camera_size) if camera_size is not None else (cam.width, cam.height)
        self._cam_id = {c: m.camera(scene_lib.camera_model_name(c)).id for c in self._cam_size}
        self._renderers: dict[tuple[int, int], RgbdRenderer] = {}
        self._segmenters: dict[tuple[int, int], mujoco.Renderer] = {}  # built on first use
        self.render_enabled = render
        if render:
            for width, height in sorted(set(self._cam_size.values())):
                self._renderers[(width, height)] = RgbdRenderer(self.model, width, height)
        # Free GL contexts when the core is collected or at exit, while EGL is still loaded.
        self._finalizer = weakref.finalize(self, _close_renderers, self._renderers, self._segmenters)
        self.reset(0)

    # --- episode --------------------------------------------------------------------------
    @property
    def time(self) -> float:
        """Seconds of simulation time since the last reset."""
        return float(self.data.time)

    def reset(self, seed: int) -> None:
        """Start an episode: the task places its object from `seed`, the arm is at home, t = 0."""
        mujoco.mj_resetData(self.model, self.data)
        self.divergence = None
        home = np.asarray(self.profile.home, dtype=np.float64)
        self.data.qpos[self._arm_qpos] = home[:7]
        self.data.qpos[self._finger_qpos] = home[7]
        self.task.reset(np.random.default_rng(seed))
        self.executor.reset(home)
        self._apply_command(home)
        mujoco.mj_forward(self.model, self.data)
        # Let the object settle onto the table so episodes start at rest, then restart the clock.
        for _ in range(SETTLE_STEPS):
            mujoco.mj_step(self.model, self.data)
        self.data.time = 0.0
        mujoco.mj_forward(self.model, self.data)

    # --- commands -------------------------------------------------------------------------
    def submit(self, chunk: ActionChunk) -> int:
        """Execute `chunk` from now on (stamp = its start time); returns the points not yet due.
        Raises `TrajectoryRejected` for what JTC refuses (the previous trajectory continues)."""
        return self.executor.set_chunk(chunk, now=self.time, measured=self.joint_state()[0])

    def hold(self) -> None:
        """JTC's own hold (as on cancel): stop the active trajectory and hold the current command."""
        self.executor.hold(self.time)

    def _apply_command(self, q: np.ndarray) -> None:
        q = np.clip(q, self._lower, self._upper)
        self.data.ctrl[self._arm_act] = q[:7]
        self.data.ctrl[self._finger_act] = q[7]

    def step(self, n: int = 1) -> None:
        """Advance `n` physics steps, each tracking the executor's command at that time. After a
        divergence (`divergence`) nothing moves until `reset`."""
        for _ in range(n):
            if self.divergence is not None:
                return
            self._apply_command(self.executor.sample(self.data.time))
            self.divergence = self._stepper.step()

    # --- state ----------------------------------------------------------------------------
    def joint_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position (rad, m), velocity (rad/s, m/s) and actuator effort (N m, N), profile order."""
        d = self.data
        q = np.append(d.qpos[self._arm_qpos], d.qpos[self._finger_qpos[0]])
        v = np.append(d.qvel[self._arm_dof], d.qvel[self._finger_dof[0]])
        e = np.append(d.actuator_force[self._arm_act], d.actuator_force[self._finger_act[0]])
        return q, v, e

    def object_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Object grasp-frame position (3,) m and quaternion wxyz (4,), world (= robot base) frame."""
        return self.task.object_pose()

    def sensors(self) -> dict[str, np.ndarray]:
        """The Panda has no sensors beyond its joints (`SimCoreProtocol.sensors`)."""
        return {}

    # --- cameras --------------------------------------------------------------------------
    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(self._cam_size)

    def camera_size(self, camera: str) -> tuple[int, int]:
        """(width, height) in pixels."""
        try:
            return self._cam_size[camera]
        except KeyError:
            raise KeyError(f"no camera {camera!r}; cameras: {sorted(self._cam_size)}") from None

    def render(self, camera: str) -> tuple[np.ndarray, np.ndarray]:
        """RGB (H, W, 3) uint8 and depth (H, W) float32 in metres along the optical axis
        (0 where nothing is within range), from one render pass."""
        size = self.camera_size(camera)
        if not self.render_enabled:
            raise RuntimeError("this SimCore was created with render=False (or closed)")
        return self._renderers[size].render(self.data, self._cam_id[camera])

    def segmentation(self, camera: str) -> np.ndarray:
        """(H, W, 2) int32: (object id, object type) of the nearest surface, -1 for background
        (MuJoCo segmentation rendering; its renderer is built on the first call)."""
        size = self.camera_size(camera)
        if not self.render_enabled:
            raise RuntimeError("this SimCore was created with render=False (or closed)")
        if size not in self._segmenters:
            self._segmenters[size] = mujoco.Renderer(self.model, height=size[1], width=size[0])
            self._segmenters[size].enable_segmentation_rendering()
        self._segmenters[size].update_scene(self.data, camera=self._cam_id[camera])
        return self._segmenters[size].render()

    def camera_pose(self, camera: str) -> np.ndarray:
        """(4, 4) transform from the camera's optical frame (x right, y down, z forward) to the world."""
        self.camera_size(camera)  # KeyError for an unknown camera
        cam = self._cam_id[camera]
        return optical_pose_from_mujoco(self.data.cam_xpos[cam], self.data.cam_xmat[cam])

    def camera_intrinsics(self, camera: str) -> tuple[float, float, float, float]:
        """Pinhole fx, fy, cx, cy in pixels (pixel centres at integer coordinates, as in ROS)."""
        return camera_intrinsics(self.model.cam_fovy[self._cam_id[camera]], *self.camera_size(camera))

    def close(self) -> None:
        """Release the GL contexts (renderers)."""
        _close_renderers(self._renderers, self._segmenters)
        self.render_enabled = False
