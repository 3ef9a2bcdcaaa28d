"""The Adroit hand scene: build, fingertip touch during a scripted closing, segmentation mask,
and a superquadric fit on the object's rendered point cloud (real MuJoCo, real rendering)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from dexstack.hardware.hand_synergy import HAND_CLOSED, HAND_OPEN
from dexstack.hardware.profiles import ADROIT
from dexstack.perception.camera import points_from_depth
from dexstack.perception.superquadric import fit_superquadric
from dexstack.sim import hand_scene
from dexstack.sim.hand_core import TOUCH_THRESHOLD, HandSim, close_hand_targets
from dexstack.sim.hand_scene import TOUCH_PADS


@pytest.fixture(scope="module")
def sim():
    hand_sim = HandSim("potted_meat_can", render=True, camera_size=(160, 120))
    yield hand_sim
    hand_sim.close()


def test_scene_builds_with_the_profile_joints_and_a_resting_object(sim):
    m = sim.model
    assert m.opt.timestep == pytest.approx(hand_scene.TIMESTEP)
    assert m.nu == ADROIT.n_joints == 30
    for name, lo, hi in zip(sim.names.arm_joints + sim.names.hand_joints, ADROIT.lower, ADROIT.upper, strict=True):
        assert m.jnt_range[m.joint(name).id] == pytest.approx([lo, hi], abs=1e-3), name
    assert len(sim.names.pad_geoms) == len(TOUCH_PADS) == 5
    sim.reset()
    # After settling the box stands on the table: bottom at z = 0, centre half its height up, at rest.
    centre = sim.object_center()
    assert centre[2] == pytest.approx(0.041, abs=2e-3)
    assert np.linalg.norm(centre[:2] - hand_scene.OBJECT_XY) < 2e-3
    assert np.abs(sim.data.qvel[sim._object_dof : sim._object_dof + 6]).max() < 1e-2
    sim.step(250)  # 0.5 s more: nothing drifts or blows up at this timestep
    assert np.linalg.norm(sim.object_center() - centre) < 1e-3
    error = np.abs(sim.joint_positions() - sim.start_pose())
    assert error[:6].max() < 1e-4
    # Fingers commanded to a limit rest up to 1 cm inside it: Adroit's joint limits act from a
    # 0.01 rad margin.
    assert error[6:].max() < 0.012
    assert all(sim.data.warning[w].number == 0 for w in range(len(sim.data.warning)))


def test_unknown_object_and_bad_commands_are_refused(sim):
    with pytest.raises(ValueError, match="unknown object 'teapot'"):
        hand_scene.build_hand_scene("teapot")
    with pytest.raises(ValueError, match="30 finite joint positions"):
        sim.set_targets(np.zeros(7))
    with pytest.raises(ValueError, match="finite"):
        sim.set_targets(np.full(30, np.nan))
    with pytest.raises(ValueError, match="finite"):
        sim.place_object([0.0, np.inf, 0.1])
    with pytest.raises(ValueError, match="finite"):
        close_hand_targets(float("nan"))


def test_closing_controller_ramps_from_open_to_closed_within_limits():
    assert np.array_equal(close_hand_targets(0.0), HAND_OPEN)
    assert np.array_equal(close_hand_targets(1.0), HAND_CLOSED)
    assert np.array_equal(close_hand_targets(7.0), HAND_CLOSED)  # clipped
    half = close_hand_targets(0.5)
    assert np.allclose(half, 0.5 * (HAND_OPEN + HAND_CLOSED))
    lower, upper = ADROIT.lower[6:], ADROIT.upper[6:]
    assert np.all(HAND_CLOSED >= lower) and np.all(HAND_CLOSED <= upper)
    # Every finger flexes: the three flexion joints of the four fingers close by at least 0.8 rad.
    for finger in ("FF", "MF", "RF", "LF"):
        for joint in ("J2", "J1", "J0"):
            assert HAND_CLOSED[hand_scene.HAND_JOINTS.index(finger + joint)] >= 0.8


def top_grasp(hand_sim: HandSim) -> None:
    """Palm frame 5 cm above the centre of the (90 deg turned) object's top, then servoed down
    onto it: closing across world x, approach down."""
    top = hand_sim.object_center() + [0.0, 0.0, hand_sim.object_spec.height() / 2]
    down = np.array([0.0, 1.0, 0.0, 0.0])  # grasp x = world x, z = world -z
    above = hand_sim.solve_palm_ik(top + [0.0, 0.0, 0.05], down)
    on_top = hand_sim.solve_palm_ik(top, down)
    assert above.success and on_top.success, (above, on_top)
    hand_sim.set_arm_pose(above.arm_q, settle_steps=50)
    hand_sim.set_arm_targets(on_top.arm_q)
    hand_sim.step(150)


def test_touch_reports_contact_closing_on_the_object_and_none_in_free_air(sim):
    sim.reset()
    top_grasp(sim)
    # Open hand on the object: no fingertip touches it yet.
    assert all(not flag and force == 0.0 for flag, force in sim.fingertip_touch().values())

    sim.run_closing()
    touch = sim.fingertip_touch()
    assert tuple(touch) == TOUCH_PADS
    in_contact = [pad for pad, (flag, force) in touch.items() if flag]
    # The thumb meets the object with its distal pad (not only its proximal phalanx).
    assert len(in_contact) >= 4 and "thumb" in in_contact, touch
    for pad in in_contact:
        assert TOUCH_THRESHOLD < touch[pad][1] < 100.0, touch  # newtons, a finger's grip, not a blow-up
    # The fingers really are on the object (the contacts the pads report are with its geoms).
    m, d = sim.model, sim.data
    object_geoms = set(sim._object_geoms.tolist())
    pad_partners = {
        int(g2 if g1 in sim._pad_geom else g1)
        for g1, g2 in d.contact.geom[: d.ncon]
        if g1 in sim._pad_geom or g2 in sim._pad_geom
    }
    assert pad_partners and pad_partners <= object_geoms, [m.geom(g).name for g in pad_partners]
    # Same forces as Adroit's own touch sensors on its fingertip sites (all contacts here are
    # hand-object, which both count).
    adroit_tips = [float(d.sensor(f"adroit/ST_Tch_{f}tip").data[0]) for f in ("th", "ff", "mf", "rf", "lf")]
    assert sim.pad_forces() == pytest.approx(adroit_tips, rel=0.05, abs=0.01)
    # The grasp did not knock the box over (the squeeze may lift it a few millimetres).
    assert sim.object_center()[2] == pytest.approx(0.041, abs=8e-3)
    up = sim.data.xmat[sim._object_body].reshape(3, 3)[:, 2]
    assert up[2] > np.cos(0.2)

    # The same closing with the object moved away: no pad reports anything.
    sim.reset()
    sim.park_object()
    sim.run_closing()
    assert np.abs(sim.joint_positions()[6:] - HAND_OPEN).max() > 0.5  # the hand did close
    touch = sim.fingertip_touch()
    assert all(flag is False for flag, _ in touch.values()), touch
    assert np.abs(sim.pad_forces()).max() < 1e-9


def test_segmentation_selects_the_object_and_its_cloud_fits_a_superquadric_at_its_centre(sim):
    sim.reset()
    rgb, depth = sim.render()
    mask = sim.object_mask()
    assert mask.shape == depth.shape == (120, 160) and rgb.shape == (120, 160, 3)
    assert mask.sum() > 100
    # The object's pixels are its colour (blue potted meat can), the rest of the image is not.
    colour = np.asarray(sim.object_spec.rgba[:3])
    mean_in = rgb[mask].mean(axis=0) / 255.0
    assert mean_in[2] > mean_in[0] + 0.2 and mean_in[2] > mean_in[1] + 0.1, (mean_in, colour)

    fx, fy, cx, cy = sim.camera_intrinsics()
    points = points_from_depth(depth, mask, fx, fy, cx, cy, sim.camera_pose())
    # Every masked pixel back-projects onto the box (half extents 4.85 x 2.5 x 4.1 cm, turned 90 deg).
    centre = sim.object_center()
    local = np.abs(points - centre)
    assert np.all(local <= np.array([0.025, 0.0485, 0.041]) + 0.004), local.max(axis=0)
    # Pixels outside the mask with a depth return are not on the box.
    others = points_from_depth(depth, ~mask, fx, fy, cx, cy, sim.camera_pose())
    inside = np.all(np.abs(others - centre) < np.array([0.020, 0.043, 0.036]), axis=1)
    assert inside.sum() == 0

    fit = fit_superquadric(points, support_z=0.0)
    assert np.linalg.norm(fit.position - centre) < 0.02, (fit.position, centre)
    mujoco.mj_forward(sim.model, sim.data)  # rendering leaves the physics state untouched
    assert np.allclose(sim.object_center(), centre)


@pytest.mark.parametrize("name", ["sugar_box", "mustard_bottle", "bleach_cleanser"])
def test_taller_objects_start_clear_of_the_hand_and_rest_on_the_table(name):
    tall = HandSim(name, render=False)
    tall.reset()
    spec = tall.object_spec
    assert tall.joint_positions()[1] == pytest.approx(spec.height() - hand_scene.CLEAR_HEIGHT_AT_ZERO, abs=2e-3)
    m, d = tall.model, tall.data
    hand_object = [
        (g1, g2)
        for (g1, g2), dist in zip(d.contact.geom[: d.ncon], d.contact.dist[: d.ncon], strict=True)
        if (tall._hand_geom[g1] or tall._hand_geom[g2]) and dist < 0.0
    ]
    assert hand_object == [], [(m.geom(a).name, m.geom(b).name) for a, b in hand_object]
    bottom = tall.object_pose()[0][2] - spec.grasp_height
    assert bottom == pytest.approx(0.0, abs=2e-3)  # standing on the table top
    with pytest.raises(ValueError, match="outside what the arm clears"):
        hand_scene.start_lift(0.5)
