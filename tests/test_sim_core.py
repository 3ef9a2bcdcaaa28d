"""SimCore and scene: real MuJoCo, real EGL rendering."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from dexstack.hardware.profiles import PANDA
from dexstack.sim import objects, scene
from dexstack.sim.core import SimCore
from dexstack.sim.tasks import pick_lift
from dexstack.trajectory import ActionChunk


@pytest.fixture(scope="module")
def core() -> SimCore:
    sim = SimCore(render=False)
    yield sim
    sim.close()


def test_scene_holds_ycb_like_catalogue_with_published_masses():
    root, names = scene.build_scene()
    model = scene.compile_model(root)
    assert len(names.objects) >= 10
    for body_name in names.objects:
        spec = objects.CATALOG[body_name.rstrip("/")]
        assert model.body_subtreemass[model.body(body_name).id] == pytest.approx(spec.mass, rel=1e-6)
    objects.check_catalog()  # every graspable object fits an 8 cm gripper
    assert all(objects.CATALOG[n].grasp_width <= 0.07 for n in objects.GRASPABLE)
    # The profile's joints exist in the model with the profile's limits.
    for i, joint in enumerate(names.arm_joints):
        assert tuple(model.jnt_range[model.joint(joint).id]) == pytest.approx((PANDA.lower[i], PANDA.upper[i]))


def test_unknown_object_is_refused_with_its_name():
    with pytest.raises(ValueError, match="unicorn"):
        scene.build_scene(object_names=("unicorn",))


def test_reset_places_one_object_in_the_workspace_at_time_zero(core):
    for seed in range(5):
        core.reset(seed)
        assert core.time == 0.0
        pos, quat = core.object_pose()
        assert pick_lift.X_RANGE[0] <= pos[0] <= pick_lift.X_RANGE[1]
        assert pick_lift.Y_RANGE[0] <= pos[1] <= pick_lift.Y_RANGE[1]
        assert core.task.object_name in objects.GRASPABLE
        # Resting on the table: grasp point at its rest height (within contact softness), upright.
        assert pos[2] == pytest.approx(core.task.rest_height, abs=3e-3)
        assert abs(quat[1]) < 0.01 and abs(quat[2]) < 0.01
        q, v, _ = core.joint_state()
        np.testing.assert_allclose(q, PANDA.home, atol=1e-3)
    core.reset(0)
    first = core.object_pose()[0]
    core.reset(1)
    assert not np.allclose(first, core.object_pose()[0])


def test_position_target_moves_the_arm_there(core):
    core.reset(0)
    target = np.array(PANDA.home) + [0.4, 0.3, -0.3, 0.4, 0.3, -0.3, 0.5, -0.03]
    core.submit(ActionChunk.uniform(PANDA.joint_names, target[None], 1.0, stamp=0.0))
    core.step(int(1.5 / core.dt))
    q, v, _ = core.joint_state()
    np.testing.assert_allclose(q[:7], target[:7], atol=5e-3)  # rad
    assert q[7] == pytest.approx(target[7], abs=2e-3)  # m, fingers open 1 cm each
    assert np.max(np.abs(v[:7])) < 0.01


def test_commands_are_clipped_to_the_profile_limits(core):
    core.reset(0)
    target = np.array(PANDA.home)
    target[0] = PANDA.upper[0] + 1.0  # beyond the limit
    core.submit(ActionChunk.uniform(PANDA.joint_names, target[None], 0.5, stamp=0.0))
    core.step(int(3.0 / core.dt))
    assert core.data.ctrl[0] == pytest.approx(PANDA.upper[0])
    assert core.joint_state()[0][0] <= PANDA.upper[0] + 1e-3


def _run(core: SimCore, seed: int) -> np.ndarray:
    core.reset(seed)
    rng = np.random.default_rng(123)
    trajectory = []
    for k in range(6):
        targets = np.array(PANDA.home) + rng.uniform(-0.2, 0.2, (4, 8)) * [1, 1, 1, 1, 1, 1, 1, 0.05]
        core.submit(ActionChunk.uniform(PANDA.joint_names, targets, 0.1, stamp=core.time))
        for _ in range(50):
            core.step(1)
            trajectory.append(np.concatenate([*core.joint_state(), *core.object_pose()]))
        if k == 3:
            core.hold()
    return np.array(trajectory)


def test_same_seed_and_commands_give_identical_trajectories(core):
    first = _run(core, seed=7)
    second = _run(core, seed=7)
    assert np.array_equal(first, second)
    other = _run(core, seed=8)
    assert not np.array_equal(first[:, -7:], other[:, -7:])


def test_render_false_creates_no_renderer(core):
    assert not core._renderers
    with pytest.raises(RuntimeError, match="render=False"):
        core.render("scene")


@pytest.fixture(scope="module")
def rendering_core() -> SimCore:
    sim = SimCore(render=True, camera_size=(128, 96))
    yield sim
    sim.close()


def _optical_axis_distance(sim: SimCore, camera: str) -> float:
    """Distance (m) from the camera to the first visible surface on its optical axis."""
    cam = sim.model.camera(scene.camera_model_name(camera)).id
    origin = sim.data.cam_xpos[cam].copy()
    forward = -sim.data.cam_xmat[cam].reshape(3, 3)[:, 2]
    geom = np.zeros(1, dtype=np.int32)
    groups = np.array([1, 1, 1, 0, 0, 0], dtype=np.uint8)  # what the renderer draws
    return mujoco.mj_ray(sim.model, sim.data, origin, forward, groups, 1, -1, geom)


@pytest.mark.parametrize("camera", ["scene", "wrist"])
def test_rendering_gives_rgb_and_metric_depth(rendering_core, camera):
    sim = rendering_core
    sim.reset(3)
    rgb, depth = sim.render(camera)
    assert rgb.shape == (96, 128, 3) and rgb.dtype == np.uint8
    assert depth.shape == (96, 128) and depth.dtype == np.float32
    assert rgb.std() > 10.0  # not a blank image
    # Depth along the optical axis equals the distance to what that ray hits (the table or
    # the object), measured independently by ray casting.
    expected = _optical_axis_distance(sim, camera)
    centre = depth[47:49, 63:65].mean()
    assert 0.2 < expected < 2.0
    assert centre == pytest.approx(expected, rel=0.02)


def test_intrinsics_project_the_object_onto_its_depth(rendering_core):
    sim = rendering_core
    sim.reset(4)
    rgb, depth = sim.render("scene")
    fx, fy, cx, cy = sim.camera_intrinsics("scene")
    cam = sim.model.camera("scene").id
    rot = sim.data.cam_xmat[cam].reshape(3, 3)
    p = rot.T @ (sim.object_pose()[0] - sim.data.cam_xpos[cam])  # camera frame, looking along -z
    z = -p[2]
    u, v = int(round(fx * p[0] / z + cx)), int(round(cy - fy * p[1] / z))
    assert 0 <= u < 128 and 0 <= v < 96
    # The grasp point is inside the object, so the visible surface there is a little nearer.
    assert z - 0.06 < depth[v, u] < z
    assert abs(depth[v, u] - z) < abs(np.median(depth) - z) + 0.06


def test_single_pass_rgbd_matches_mujoco_renderer(rendering_core):
    sim = rendering_core
    sim.reset(2)
    rgb, depth = sim.render("scene")
    reference = mujoco.Renderer(sim.model, height=96, width=128)
    try:
        for flag in (
            mujoco.mjtRndFlag.mjRND_SHADOW,
            mujoco.mjtRndFlag.mjRND_REFLECTION,
            mujoco.mjtRndFlag.mjRND_SKYBOX,
        ):
            reference.scene.flags[flag] = False
        reference.update_scene(sim.data, camera="scene")
        ref_rgb = reference.render()
        reference.enable_depth_rendering()
        reference.update_scene(sim.data, camera="scene")
        ref_depth = reference.render()
    finally:
        reference.close()
    assert np.mean(np.abs(rgb.astype(int) - ref_rgb.astype(int))) < 2.0
    hit = depth > 0
    assert 0.3 < hit.mean() < 1.0  # the table fills much of the view; the sky beyond it is "no return"
    np.testing.assert_allclose(depth[hit], ref_depth[hit], rtol=1e-3)
    assert np.all(ref_depth[~hit] > 50.0)  # what we report as 0 is the far plane there


def test_separate_cores_agree_exactly(core):
    """Two processes (sim node, env) build their own core; the same seed must match bit for bit."""
    other = SimCore(render=False)
    try:
        assert np.array_equal(_run(core, seed=21), _run(other, seed=21))
    finally:
        other.close()


# --- the core protocol: both robots -----------------------------------------------------------
@pytest.fixture(scope="module")
def hand_core():
    from dexstack.sim.cores import HandCore

    core = HandCore(object_name="sugar_box")
    yield core
    core.close()


def _model_data(core):
    """The MuJoCo model and data behind a core (the hand's live in its HandSim)."""
    return (core.model, core.data) if isinstance(core, SimCore) else (core.sim.model, core.sim.data)


@pytest.mark.parametrize("which", ["panda", "hand"])
def test_both_cores_satisfy_the_protocol_and_their_depth_back_projects_onto_what_they_segment(
    which, rendering_core, hand_core
):
    """Intrinsics + camera pose + depth put every segmented pixel on the surface of the geom the
    segmentation names (within that geom's bounding sphere): the three agree for either robot."""
    from dexstack.perception.camera import points_from_depth
    from dexstack.sim.protocol import SimCoreProtocol

    core = rendering_core if which == "panda" else hand_core
    assert isinstance(core, SimCoreProtocol)
    assert core.reset(5) is None
    assert core.time == 0.0
    q, v, e = core.joint_state()
    assert q.shape == v.shape == e.shape == (core.profile.n_joints,)
    assert set(core.sensors()) == ({"tactile"} if core.profile.tactile_pads else set())
    model, data = _model_data(core)
    checked = 0
    for camera in core.camera_names:
        _, depth = core.render(camera)
        seg = core.segmentation(camera)
        assert seg.shape == depth.shape + (2,)
        geom_ids = seg[..., 0]
        is_geom = seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM)
        solid = is_geom & (depth > 0)
        solid &= model.geom_type[np.maximum(geom_ids, 0)] != int(mujoco.mjtGeom.mjGEOM_PLANE)
        points = points_from_depth(depth, solid, *core.camera_intrinsics(camera), core.camera_pose(camera))
        ids = geom_ids[solid]
        distance = np.linalg.norm(points - data.geom_xpos[ids], axis=1)
        assert len(points) > 100
        # 1 cm of slack: depth is quantised by the depth buffer and pixels straddle edges.
        assert np.mean(distance <= model.geom_rbound[ids] + 0.01) > 0.98, camera
        checked += 1
    assert checked == len(core.camera_names) >= 1


def test_segmentation_geom_type_constant_is_mujocos():
    from dexstack.perception.camera import SEGMENTATION_GEOM_TYPE

    assert SEGMENTATION_GEOM_TYPE == int(mujoco.mjtObj.mjOBJ_GEOM)


def test_a_task_runs_only_on_its_robots_core():
    from dexstack.sim.cores import make_core

    with pytest.raises(ValueError, match="adroit"):
        SimCore("grasp", PANDA, render=False)
    with pytest.raises(ValueError, match="panda"):
        make_core("pick_lift", "adroit", render=False)
    with pytest.raises(ValueError, match="options"):
        make_core("pick_lift", render=False, options={"object": "sugar_box"})


def test_episode_clock_stays_monotonic_and_ends_at_the_time_limit(core):
    from dexstack.sim.episodes import SIM_TIME_START_S, EpisodeClock

    clock = EpisodeClock(core, first_seed=7, policy_rate_hz=10.0, max_time_s=0.2)
    clock.start()
    assert (clock.episode, clock.seed, clock.now()) == (0, 7, SIM_TIME_START_S)
    ends = []
    while (ended := clock.check_end()) is None:
        core.step(clock.steps_per_tick)
        ends.append(clock.now())
    assert ended is False and clock.done and core.time == pytest.approx(0.2)  # nothing lifted: a timeout
    assert ends == sorted(ends) and ends[0] > SIM_TIME_START_S
    end = clock.now()
    clock.start()
    # The next episode starts one control period after the last one ended, with the next seed.
    assert (clock.episode, clock.seed, clock.done) == (1, 8, False)
    assert clock.now() == pytest.approx(end + 0.1) and core.time == 0.0
    with pytest.raises(ValueError, match="limit"):
        EpisodeClock(core, 0, 10.0, max_time_s=-1.0)
