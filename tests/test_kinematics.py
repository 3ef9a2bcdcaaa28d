"""Robot kinematics from the robot model alone (hardware/kinematics.py): the same FK and IK,
to the bit, as the hand scene's and the Panda expert's own implementations gave before they
were replaced by it, and no simulator import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dexstack.hardware.kinematics import RobotKinematics
from dexstack.hardware.profiles import ADROIT, PANDA, RobotProfile

# Recorded with the code this module replaced (HandSim.solve_palm_ik / palm_pose on the whole
# hand scene, the expert's ArmKinematics.ik / fk) on 40 random cases per robot: reachable and
# out-of-reach targets, starts inside and outside the joint limits, random hand joints.
GOLDEN = Path(__file__).parent / "data" / "kinematics_golden.npz"


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as data:
        return dict(data)


def test_adroit_palm_fk_and_ik_are_bit_identical_to_the_hand_scene_solver(golden):
    kin = RobotKinematics(ADROIT)
    for k in range(len(golden["adroit_q"])):
        q = golden["adroit_q"][k]
        position, quaternion = kin.site_pose(q)
        assert np.array_equal(position, golden["adroit_fk_p"][k]) and np.array_equal(
            quaternion, golden["adroit_fk_q"][k]
        )
        result = kin.solve(golden["adroit_target_p"][k], golden["adroit_target_q"][k], golden["adroit_q0"][k], rest=q)
        assert np.array_equal(result.arm_q, golden["adroit_ik_q"][k]), k
        assert result.success == golden["adroit_ik_success"][k]
        assert result.position_error == golden["adroit_ik_pos_err"][k]
        assert result.rotation_error == golden["adroit_ik_rot_err"][k]
        assert result.iterations == golden["adroit_ik_iterations"][k]
    assert 0 < golden["adroit_ik_success"].sum() < len(golden["adroit_q"])  # both outcomes are covered


def test_panda_tcp_fk_and_ik_are_bit_identical_to_the_expert_solver(golden):
    kin = RobotKinematics(PANDA)
    for k in range(len(golden["panda_q"])):
        position, rotation = kin.forward(golden["panda_q"][k])
        assert np.array_equal(position, golden["panda_fk_p"][k]) and np.array_equal(rotation, golden["panda_fk_r"][k])
        result = kin.solve(golden["panda_target_p"][k], golden["panda_target_r"][k], golden["panda_seed"][k])
        assert np.array_equal(result.arm_q, golden["panda_ik_q"][k]), k
        assert result.position_error == golden["panda_ik_err"][k]


def test_ik_reaches_what_fk_reports_and_refuses_bad_input():
    kin = RobotKinematics(ADROIT)
    q = np.zeros(ADROIT.n_joints)
    q[:6] = [0.05, 0.1, 0.1, 0.2, -0.1, 0.3]
    position, quaternion = kin.site_pose(q)
    result = kin.solve(position, quaternion, np.zeros(6), rest=np.zeros(ADROIT.n_joints))
    assert result.success and result.message == ""
    reached, _ = kin.site_pose(np.concatenate([result.arm_q, q[6:]]))
    assert np.linalg.norm(reached - position) < 1e-3
    far = kin.solve(position + [1.0, 0.0, 0.0], quaternion, np.zeros(6))
    assert not far.success and "out of reach" in far.message
    with pytest.raises(ValueError, match="quaternion"):
        kin.solve(position, [0.0, 0.0, 0.0, 0.0], np.zeros(6))
    with pytest.raises(ValueError, match="position"):
        kin.solve([np.nan, 0.0, 0.0], quaternion, np.zeros(6))
    with pytest.raises(ValueError, match="finite joint positions"):
        kin.solve(position, quaternion, np.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        kin.forward(np.full(ADROIT.n_joints, np.inf))
    with pytest.raises(ValueError, match="no robot model"):
        RobotKinematics(RobotProfile("bare", ("j",), (0.0,), (1.0,), (1.0,), (0.0,), "c"))


def test_kinematics_loads_without_the_simulator():
    code = (
        "import sys; from dexstack.hardware.kinematics import RobotKinematics; "
        "from dexstack.hardware.profiles import ADROIT, PANDA; RobotKinematics(ADROIT); RobotKinematics(PANDA); "
        "bad = [m for m in sys.modules if m.startswith('dexstack.sim') or m == 'torch']; "
        "assert not bad, bad; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
