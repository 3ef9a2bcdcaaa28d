"""Bare MuJoCo stepping of the pick_lift scene: steps/s and real-time factor, one JSON line.

    .venv/bin/python bench/bench_physics.py [--seconds 10] [--camera-size 128]

Each measurement replays the same scripted-expert episode (approach, grasp, lift) over
`--seconds` of simulated time:
- `bare`: recorded controls + mj_step, nothing else (the ceiling for the sim node);
- `bare_cameras`: the same plus both cameras' RGB + depth at 15 Hz of sim time;
- `bare_checked`: `bare` with MuJoCo's divergence check after each step (`CheckedStepper`, what
  the cores do), to show what the check costs;
- `core` / `core_cameras`: chunks through SimCore.step (executor sampling, clipping), what the
  sim node calls, without and with the cameras.
The sim node's real-time factor (bench elsewhere) is compared against these.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from dexstack import contract  # noqa: E402
from dexstack.sim.core import CheckedStepper, SimCore  # noqa: E402
from dexstack.sim.experts.pick_lift import PickLiftExpert  # noqa: E402


def _expert_episode(core: SimCore, seconds: float) -> tuple[list, np.ndarray]:
    """An expert episode's chunks and the per-step controls they produce (computed before
    timing, so IK planning is not measured)."""
    expert = PickLiftExpert(core.profile)
    core.reset(0)
    chunks, controls = [], []
    per_chunk = int(round(1.0 / (contract.POLICY_HZ * core.dt)))
    while core.time < seconds - 1e-9:
        q, _, _ = core.joint_state()
        pos, quat = core.object_pose()
        chunk = expert.act(core.time, q, pos, quat)
        chunks.append(chunk)
        core.submit(chunk)
        for _ in range(per_chunk):
            core.step(1)
            controls.append(core.data.ctrl.copy())
    return chunks, np.array(controls)


def _timed(
    core: SimCore, chunks: list, controls: np.ndarray, through_core: bool, cameras: bool, checked: bool = False
) -> dict:
    """Replay the episode: raw controls + mj_step (bare; `checked`: through CheckedStepper) or
    chunks through SimCore.step."""
    core.reset(0)
    per_chunk = int(round(1.0 / (contract.POLICY_HZ * core.dt)))
    camera_every = int(round(1.0 / (contract.CAMERA_HZ * core.dt)))
    model, data = core.model, core.data
    stepper = CheckedStepper(model, data)
    frames = 0
    start = time.perf_counter()
    for i in range(len(controls)):
        if through_core:
            if i % per_chunk == 0:
                core.submit(chunks[i // per_chunk])
            core.step(1)
        else:
            data.ctrl[:] = controls[i]
            if checked:
                stepper.step()
            else:
                mujoco.mj_step(model, data)
        if cameras and i % camera_every == 0:
            for cam in core.profile.camera_names:
                core.render(cam)  # RGB + depth
                frames += 1
    wall = time.perf_counter() - start
    steps = len(controls)
    return {
        "steps": steps,
        "wall_s": round(wall, 3),
        "steps_per_s": round(steps / wall, 1),
        "realtime_factor": round(steps * core.dt / wall, 2),
        "camera_frames": frames,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="simulated seconds per measurement")
    parser.add_argument("--camera-size", type=int, default=128, help="square camera resolution, pixels")
    args = parser.parse_args()

    size = (args.camera_size, args.camera_size)
    core = SimCore(render=True, camera_size=size)
    chunks, controls = _expert_episode(core, args.seconds)
    results = {
        "bare": _timed(core, chunks, controls, through_core=False, cameras=False),
        "bare_cameras": _timed(core, chunks, controls, through_core=False, cameras=True),
        "bare_checked": _timed(core, chunks, controls, through_core=False, cameras=False, checked=True),
        "core": _timed(core, chunks, controls, through_core=True, cameras=False),
        "core_cameras": _timed(core, chunks, controls, through_core=True, cameras=True),
    }
    core.close()
    print(
        json.dumps(
            {
                "bench": "physics",
                "scene": "pick_lift",
                "timestep_s": core.dt,
                "camera_size": [args.camera_size, args.camera_size],
                "camera_hz": contract.CAMERA_HZ,
                "cpu_count": os.cpu_count(),
                "load_avg_1min": round(os.getloadavg()[0], 2),
                "mujoco": mujoco.__version__,
                **results,
            }
        )
    )


if __name__ == "__main__":
    main()
