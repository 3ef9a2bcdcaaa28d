"""G-PAYN benchmarks (issue 4): actor inference onnxruntime vs torch, grasp-pose fit time, and the
policy node's end-to-end latency serving a G-PAYN actor through ROS.

    .venv/bin/python bench/bench_gpayn.py [--policy gpayn_grasp | --run RUN_DIR] [--seconds 15]

Which actor:
- default: an untrained SAC actor on GraspEnv's real observation spec with a freshly initialised
  frozen encoder of the default feature size (64), exported with `export_actor` into a temporary
  directory and published into a temporary store (latency does not depend on the weights). Its
  output layer is scaled down so the served hand stays near its start pose: random actions would
  drive the arm out of IK's reach within seconds, and the node then holds instead of serving.
- `--run DIR`: a training run's actor (`evaluate.load_policy`), exported the same way.
- `--policy NAME[@VERSION]`: a gpayn policy already in the store (e.g. the shipped `gpayn_grasp`).
  The node serves it by name; the torch side is rebuilt from its ONNX graphs (same architecture
  and weights, checked against onnxruntime: `max_abs_diff`), or loaded from `--run` if given.

Parts (each can be skipped with `--skip`):
1. inference: the whole torch eager call (`evaluate.TorchPolicy.act`: frozen encoder on the
   64x64 image, normaliser, deterministic actor; 1 thread, batch 1) against the serving runtime
   (`runtime.Runtime.act`, onnxruntime, 1 thread) on the same real GraspEnv observations, calls
   alternating so both see the same load; p50/p99 and the ratio torch/onnxruntime. Also the
   served step (what the policy node's `inference_ms` times: the image crop + resize of the
   camera input, then `serving.make_runtime(...).act`: observation building, the actor and palm IK).
2. fit: for every training and held-out object, a few placements drawn as GraspEnv.reset draws
   them; depth + object mask rendered as `GraspEnv._perceive` renders them (arm out of view);
   timed: `points_from_depth`, `fit_superquadric(support_z=0)`, `grasp_pose` + `arm_friendly_grasp`.
3. node: `task:=grasp policy:=NAME rtf:=1 pacing:=realtime policy_rate:=50` from `dexstack.graph`
   (hand sim, grasp planner, safety filter, policy node) for `--seconds` after the first served
   trajectory; figures from the nodes' /diagnostics. Every ROS process gets
   ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and this run's own ROS_DOMAIN_ID.

Prints progress on stderr and ONE JSON object on the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import numpy as np  # noqa: E402

RATE_HZ = 50.0
BENCH_POLICY_NAME = "gpayn_bench"  # the self-built actor's name in the temporary store
PARTS = ("inference", "fit", "node")
FIT_SEED = 100  # placements of the fit part: GraspEnv's draws from this seed, per object


def log(message: str) -> None:
    print(f"bench_gpayn: {message}", file=sys.stderr, flush=True)


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=float)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


@dataclass
class BenchActor:
    """The actor under test: its store directory + manifest (what onnxruntime and the node load),
    the torch policy of the same network, and where both came from."""

    policy_dir: Path
    manifest: dict[str, Any]
    torch_policy: Any  # evaluate.TorchPolicy
    store_ref: str  # what the node is told to serve
    dexstack_home: str | None  # the temporary store's home, None for the user's store
    source: dict[str, Any]


# --- observations ------------------------------------------------------------------------------


def image_size_of(manifest: dict[str, Any]) -> tuple[int, int]:
    """(width, height) of the manifest's rgb input: the GraspEnv image size the actor was trained on."""
    rgb = [spec for spec in manifest["inputs"] if spec["kind"] == "rgb"]
    if not rgb:
        raise ValueError("the gpayn manifest has no rgb input; this bench times the encoder + actor")
    height, width = rgb[0]["shape"][:2]
    return int(width), int(height)


def real_observations(
    image_size: tuple[int, int], count: int, seed: int = 0
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, Any]]]:
    """`count` GraspEnv observations (potted meat can, small random actions after a reset) and the
    raw robot data of the same states (full joint state, pad forces, the 160x120 camera frame, the
    grasp pose) for the served step."""
    from dexstack.policies.gpayn.env import ACTION_DIM, GraspEnv

    env = GraspEnv("potted_meat_can", seed=seed, render=True, image_size=image_size)
    rng = np.random.default_rng(seed)
    observations, raw = [], []
    try:
        obs, info = env.reset(seed=seed)
        while len(observations) < count:
            frame, _ = env.sim.render()
            observations.append(obs)
            raw.append(
                {
                    "joint_states": env.sim.joint_positions().copy(),
                    "pad_forces": env.sim.pad_forces().copy(),
                    "camera": frame.copy(),
                    "grasp_pose": info["grasp_pose"],
                }
            )
            obs, _, terminated, truncated, _ = env.step(rng.uniform(-0.3, 0.3, ACTION_DIM))
            if terminated or truncated:
                obs, info = env.reset()
    finally:
        env.close()
    return observations, raw


# --- the actor ---------------------------------------------------------------------------------


def _publish_temporary(export_dir: Path, home: Path) -> tuple[Path, dict[str, Any]]:
    """Publish an export into a temporary store at `home`."""
    from dexstack.store import PolicyStore

    loaded = PolicyStore(root=home / "policies", bundled=False).publish(export_dir, name=BENCH_POLICY_NAME)
    return loaded.path, loaded.manifest


def untrained_actor(tmp: Path, observations: list[dict[str, np.ndarray]]) -> BenchActor:
    """An untrained SAC on GraspEnv's spec + a fresh frozen 64-feature encoder, exported and published."""
    import torch

    from dexstack.policies.gpayn import train
    from dexstack.policies.gpayn.encoder import ImageEncoder, encode_images, freeze
    from dexstack.policies.gpayn.env import ACTION_DIM, CONTROL_HZ, GraspEnv
    from dexstack.policies.gpayn.evaluate import TorchPolicy
    from dexstack.policies.gpayn.export import export_actor
    from dexstack.policies.gpayn.sac import SAC, SACConfig, vector_spec

    config = train.GPAYNConfig()
    torch.manual_seed(0)
    encoder = freeze(ImageEncoder(config.feature_dim, image_hw=(config.image_size[1], config.image_size[0])))
    env = GraspEnv("potted_meat_can", render=True, image_size=config.image_size)
    try:
        spec = vector_spec(env.observation_spec(), visual_dim=encoder.feature_dim)
    finally:
        env.close()
    sac = SAC(spec, ACTION_DIM, SACConfig(), seed=0, device="cpu")
    # Statistics from the real observations, as the trainer seeds them from demonstrations.
    batch = {key: np.stack([obs[key] for obs in observations]) for key in spec if key != train.VISUAL_KEY}
    batch[train.VISUAL_KEY] = encode_images(encoder, np.stack([obs["image"] for obs in observations]))
    sac.update_normalizer(batch)
    sac.freeze_normalizer()
    with torch.no_grad():  # actions near 0: the served hand stays in reach (same computation)
        mean_layer = sac.actor.net[-1]
        mean_layer.weight[:ACTION_DIM] *= 0.01
        mean_layer.bias[:ACTION_DIM] = 0.0
    export_dir = export_actor(
        sac,
        spec,
        tmp / "export",
        encoder=encoder,
        checks=2,
        dt=1.0 / CONTROL_HZ,
        provenance={"bench": "untrained, bench_gpayn.py"},
    )
    policy_dir, manifest = _publish_temporary(export_dir, tmp / "home")
    actor_params = sum(p.numel() for p in sac.actor.parameters())
    return BenchActor(
        policy_dir,
        manifest,
        TorchPolicy(sac, encoder, image_size=config.image_size),
        BENCH_POLICY_NAME,
        str(tmp / "home"),
        {
            "kind": "untrained",
            "actor_parameters": actor_params,
            "encoder_parameters": sum(p.numel() for p in encoder.parameters()),
            "hidden": list(sac.config.hidden),
            "feature_dim": encoder.feature_dim,
        },
    )


def run_actor(run_dir: Path, tmp: Path) -> BenchActor:
    """A training run's actor (torch from its checkpoint), exported with `export.export_run` and published."""
    from dexstack.policies.gpayn.evaluate import load_policy
    from dexstack.policies.gpayn.export import export_run

    policy, _ = load_policy(run_dir)
    export_dir = export_run(run_dir, tmp / "export")
    policy_dir, manifest = _publish_temporary(export_dir, tmp / "home")
    return BenchActor(
        policy_dir,
        manifest,
        policy,
        BENCH_POLICY_NAME,
        str(tmp / "home"),
        {"kind": "run", "run": str(run_dir), **_sizes(policy)},
    )


def _sizes(policy: Any) -> dict[str, Any]:
    out = {
        "actor_parameters": sum(p.numel() for p in policy.sac.actor.parameters()),
        "hidden": list(policy.sac.config.hidden),
    }
    if policy.encoder is not None:
        out |= {
            "encoder_parameters": sum(p.numel() for p in policy.encoder.parameters()),
            "feature_dim": policy.encoder.feature_dim,
        }
    return out


def torch_policy_from_onnx(policy_dir: Path, manifest: dict[str, Any]) -> Any:
    """The torch TorchPolicy of an exported gpayn actor, rebuilt from its ONNX graphs: layer sizes
    from the initializers' shapes, weights copied from them, normalisation from the manifest.

    The legacy exporter folds GroupNorm's per-channel affine into unnamed [1, C, 1, 1] constants
    (the Mul and Add after each normalisation, deduplicated when equal); they are read back in
    graph order. The caller checks the rebuilt policy against onnxruntime."""
    import onnx
    import torch
    from onnx import numpy_helper

    from dexstack.policies.gpayn.encoder import ImageEncoder, PreciseGroupNorm, freeze
    from dexstack.policies.gpayn.evaluate import TorchPolicy
    from dexstack.policies.gpayn.sac import SAC, SACConfig

    graphs, rt = manifest["graphs"], manifest.get("runtime") or {}
    actor_graph = onnx.load(str(policy_dir / graphs["actor"]))
    actor_weights = {i.name: numpy_helper.to_array(i) for i in actor_graph.graph.initializer}
    linear = sorted(
        (k for k in actor_weights if k.startswith("actor.net.") and k.endswith(".weight")),
        key=lambda k: int(k.split(".")[2]),
    )
    if not linear:
        raise ValueError(f"{graphs['actor']} has no actor.net.*.weight initializers; not a gpayn actor graph")
    hidden = tuple(int(actor_weights[k].shape[0]) for k in linear[:-1])
    visual = rt.get("visual")
    by_name = {spec["name"]: spec for spec in manifest["inputs"]}
    spec = {
        key: int(visual["feature_dim"]) if visual and key == visual["key"] else int(by_name[key]["shape"][0])
        for key in rt["actor_inputs"]
    }
    norms = {key: by_name[key]["normalization"] for key in spec if key in by_name}
    if visual:
        norms[visual["key"]] = visual["normalization"]
    min_std = min(float(np.min(n["std"])) for n in norms.values())
    config = SACConfig(
        hidden=hidden, obs_clip=float(rt.get("obs_clip", SACConfig.obs_clip)), min_std=min(SACConfig.min_std, min_std)
    )
    sac = SAC(spec, int(manifest["outputs"]["action_dim"]), config, seed=0, device="cpu")
    sac.actor.load_state_dict(
        {k.removeprefix("actor."): torch.as_tensor(v) for k, v in actor_weights.items() if k.startswith("actor.")}
    )
    with torch.no_grad():
        for key, norm in sac.normalizer.norms.items():  # count 1, m2 = std^2: std() gives the manifest's std
            mean = np.broadcast_to(np.asarray(norms[key]["mean"], np.float64), (norm.dim,))
            std = np.broadcast_to(np.asarray(norms[key]["std"], np.float64), (norm.dim,))
            norm.mean.copy_(torch.as_tensor(mean))
            norm.m2.copy_(torch.as_tensor(std**2))
            norm.count.fill_(1.0)
    sac.freeze_normalizer()
    if not visual:
        return TorchPolicy(sac, None, render=False)

    encoder_graph = onnx.load(str(policy_dir / graphs["encoder"])).graph
    weights = {i.name: numpy_helper.to_array(i) for i in encoder_graph.initializer}
    convs = sorted(
        (k for k in weights if k.startswith("trunk.") and k.endswith(".weight")), key=lambda k: int(k.split(".")[1])
    )
    channels = tuple(int(weights[k].shape[0]) for k in convs)
    image_hw = tuple(int(v) for v in by_name[visual["image_input"]]["shape"][:2])
    encoder = ImageEncoder(int(weights["head.1.weight"].shape[0]), channels, image_hw)
    state = {k: torch.as_tensor(v) for k, v in weights.items() if k in encoder.state_dict()}
    affine = []  # (scale, shift) per GroupNorm, in graph order
    for i, node in enumerate(encoder_graph.node[:-1]):
        nxt = encoder_graph.node[i + 1]
        if node.op_type == "Mul" and nxt.op_type == "Add" and node.output[0] in nxt.input:
            scale = next((weights[n] for n in node.input if n in weights and weights[n].ndim == 4), None)
            shift = next((weights[n] for n in nxt.input if n in weights and weights[n].ndim == 4), None)
            if scale is not None and shift is not None:
                affine.append((scale.reshape(-1), shift.reshape(-1)))
    groupnorms = [name for name, m in encoder.named_modules() if isinstance(m, PreciseGroupNorm)]
    if len(affine) != len(groupnorms):
        raise ValueError(
            f"{graphs['encoder']}: found {len(affine)} GroupNorm affine constants for "
            f"{len(groupnorms)} GroupNorm layers; cannot rebuild the torch encoder"
        )
    for name, (scale, shift) in zip(groupnorms, affine, strict=True):
        state[f"{name}.weight"], state[f"{name}.bias"] = torch.as_tensor(scale), torch.as_tensor(shift)
    encoder.load_state_dict(state)
    return TorchPolicy(sac, freeze(encoder), image_size=(image_hw[1], image_hw[0]))


def store_actor(ref: str, run_dir: Path | None) -> BenchActor:
    """A gpayn policy of the store; torch from `run_dir` if given, else rebuilt from its graphs."""
    from dexstack.hardware.profiles import ADROIT
    from dexstack.policies.gpayn.evaluate import load_policy
    from dexstack.store import PolicyStore

    loaded = PolicyStore().load(ref, ADROIT)
    if loaded.manifest.get("family") != "gpayn":
        raise ValueError(f"policy {ref} is of family {loaded.manifest.get('family')!r}, not 'gpayn'")
    if run_dir is not None:
        policy, _ = load_policy(run_dir)
        torch_source = f"run {run_dir}"
    else:
        policy = torch_policy_from_onnx(loaded.path, loaded.manifest)
        torch_source = "rebuilt from the ONNX graphs"
    return BenchActor(
        loaded.path,
        loaded.manifest,
        policy,
        f"{loaded.name}@{loaded.version}",
        None,
        {
            "kind": "store",
            "policy": f"{loaded.name}@{loaded.version}",
            "manifest_sha256": loaded.manifest_sha256,
            "torch": torch_source,
            **_sizes(policy),
        },
    )


# --- 1. inference ------------------------------------------------------------------------------


def bench_inference(
    actor: BenchActor,
    observations: list[dict[str, np.ndarray]],
    raw: list[dict[str, Any]],
    calls: int,
    warmup: int,
    threads: int,
) -> dict[str, Any]:
    import torch

    from dexstack.hardware.profiles import ADROIT
    from dexstack.images import center_crop_resize
    from dexstack.policies.gpayn.action import IKFailed
    from dexstack.policies.gpayn.runtime import Runtime
    from dexstack.policies.gpayn.serving import make_runtime

    torch.set_num_threads(threads)
    runtime = Runtime(actor.policy_dir, actor.manifest, threads=threads)
    torch_act = actor.torch_policy.act
    max_diff = max(float(np.abs(runtime.act(obs) - torch_act(obs)).max()) for obs in observations)

    serving = make_runtime(actor.policy_dir, actor.manifest, profile=ADROIT, rate_hz=RATE_HZ)
    cameras = [spec for spec in actor.manifest["inputs"] if spec["kind"] == "rgb"]
    serving_raw = []
    for data in raw:  # the values the node hands the runtime, by manifest input name (the camera still full size)
        one = {
            "joint_states": data["joint_states"],
            "grasp_target": np.concatenate(data["grasp_pose"]),
            **{
                f"tactile/{pad}": np.array([0.0, 0.0, force, 0.0, 0.0, 0.0])
                for pad, force in zip(ADROIT.tactile_pads, data["pad_forces"], strict=True)
            },
        }
        serving_raw.append((one, data["camera"]))
    ik_holds = 0

    def serve(i: int) -> None:
        # Serving integrates its own palm target from call to call, as on the robot: start it again
        # from the measured state where the recording starts over, and after an IK hold (timed too:
        # the node pays for the failed solve).
        nonlocal ik_holds
        one, camera = serving_raw[i % len(serving_raw)]
        if i % len(serving_raw) == 0:
            serving.reset()
        images = {
            spec["name"]: center_crop_resize(camera, *spec["shape"][:2]) for spec in cameras
        }  # the node's preprocess
        try:
            serving.act(one | images)
        except IKFailed:
            ik_holds += 1
            serving.reset()

    calls_by_backend = {
        "onnxruntime": lambda i: runtime.act(observations[i % len(observations)]),
        "torch_eager": lambda i: torch_act(observations[i % len(observations)]),
        "serving_act": serve,
    }
    for i in range(warmup):
        for fn in calls_by_backend.values():
            fn(i)
    times: dict[str, list[float]] = {name: [] for name in calls_by_backend}
    for i in range(calls):  # interleaved: every backend sees the same machine load
        for name, fn in calls_by_backend.items():
            t0 = time.perf_counter()
            fn(i)
            times[name].append((time.perf_counter() - t0) * 1e3)
    ort, eager = percentiles(times["onnxruntime"]), percentiles(times["torch_eager"])
    return {
        "calls": calls,
        "threads": threads,
        "batch": 1,
        "observations": len(observations),
        "onnxruntime": ort,
        "torch_eager": eager,
        "ratio_torch_over_ort_p50": round(eager["p50_ms"] / ort["p50_ms"], 2),
        "ratio_torch_over_ort_p99": round(eager["p99_ms"] / ort["p99_ms"], 2),
        "serving_act_incl_ik": percentiles(times["serving_act"]),
        "serving_ik_holds": ik_holds,
        "max_abs_diff_torch_vs_ort": max_diff,
    }


# --- 2. grasp-pose fit -------------------------------------------------------------------------


def bench_fit(objects: tuple[str, ...], placements: int, seed: int) -> dict[str, Any]:
    """Per object: p50/p99 of each stage over `placements` placements drawn as GraspEnv.reset draws
    them, the cloud size and the fitted centre's distance from the object's true centre."""
    from dexstack.perception.camera import points_from_depth
    from dexstack.perception.grasp_pose import arm_friendly_grasp, grasp_pose
    from dexstack.perception.superquadric import fit_superquadric
    from dexstack.policies.gpayn import env as genv
    from dexstack.sim import hand_scene
    from dexstack.sim.hand_core import HandSim
    from dexstack.sim.tasks import grasp as gtask

    reference = np.asarray(hand_scene.ARM_MOUNT_POS, dtype=float)
    results: dict[str, Any] = {}
    for name in objects:
        sim = HandSim(name, render=True, camera_size=gtask.FIT_CAMERA_SIZE)
        rng = np.random.default_rng(seed)
        stages: dict[str, list[float]] = {"points": [], "fit": [], "grasp": [], "total": []}
        n_points, centre_mm, failures = [], [], []
        try:
            for _ in range(placements):
                xy = np.asarray(hand_scene.OBJECT_XY) + rng.uniform(-gtask.PLACEMENT_XY, gtask.PLACEMENT_XY, 2)
                yaw = hand_scene.OBJECT_YAW + rng.uniform(-gtask.PLACEMENT_YAW, gtask.PLACEMENT_YAW)
                sim.reset(object_xy=tuple(xy), object_yaw=float(yaw))
                sim.set_arm_pose(gtask.CAMERA_CLEAR_ARM)
                _, depth = sim.render()
                mask = sim.object_mask()
                t0 = time.perf_counter()
                points = points_from_depth(depth, mask, *sim.camera_intrinsics(), sim.camera_pose())
                t1 = time.perf_counter()
                fit = fit_superquadric(points, support_z=0.0)
                t2 = time.perf_counter()
                try:
                    grasp = grasp_pose(fit, "auto", standoff=gtask.GRASP_STANDOFF, reference=reference)
                    arm_friendly_grasp(grasp, fit, reference)
                except ValueError as exc:  # no width fits the hand: GraspEnv re-draws the placement
                    failures.append(str(exc))
                t3 = time.perf_counter()
                for stage, ms in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                    stages[stage].append(ms * 1e3)
                n_points.append(len(points))
                centre_mm.append(float(np.linalg.norm(fit.position - sim.object_center())) * 1e3)
        finally:
            sim.close()
        results[name] = {
            "held_out": name in genv.HELD_OUT_OBJECTS,
            **{f"{stage}_ms": percentiles(ms) for stage, ms in stages.items()},
            "points_median": int(np.median(n_points)),
            "points_min": int(min(n_points)),
            "points_max": int(max(n_points)),
            "centre_error_mm_median": round(float(np.median(centre_mm)), 1),
            "grasp_failures": failures,
        }
        log(
            f"fit {name}: total p50 {results[name]['total_ms']['p50_ms']:.0f} ms, "
            f"{results[name]['points_median']} points"
        )
    all_totals = [v["total_ms"]["p50_ms"] for v in results.values()]
    return {
        "placements_per_object": placements,
        "seed": seed,
        "camera": list(gtask.FIT_CAMERA_SIZE),
        "objects": results,
        "total_p50_ms_median_over_objects": round(float(np.median(all_totals)), 3),
        "total_p50_ms_max_over_objects": round(float(max(all_totals)), 3),
    }


# --- 3. the policy node through ROS ------------------------------------------------------------


def _stamp_ns(stamp: Any) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def _float(values: dict[str, str], key: str) -> float | None:
    try:
        return round(float(values[key]), 3)
    except (KeyError, ValueError):
        return None


def bench_node(
    actor: BenchActor, seconds: float, object_name: str, domain: int, startup_timeout_s: float = 90.0
) -> dict[str, Any]:
    """Bring up the graph's hand nodes with the policy, wait for the first served trajectory, listen
    `seconds`, read /diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from dexstack import contract
    from dexstack.graph import node_list, parse_launch_args
    from dexstack.hardware.profiles import ADROIT
    from dexstack.launcher import node_environment, start_nodes, stop_nodes
    from dexstack.ros_nodes import common
    from dexstack.ros_nodes.client import RosClient

    launch_args = [
        "task:=grasp",
        f"policy:={actor.store_ref}",
        "rtf:=1.0",
        "pacing:=realtime",
        f"policy_rate:={RATE_HZ}",
        f"object:={object_name}",
    ]
    specs = node_list(parse_launch_args(launch_args))
    extra = {"DEXSTACK_HOME": actor.dexstack_home, "DEXSTACK_BUNDLED_STORE": ""} if actor.dexstack_home else None
    log_dir = tempfile.mkdtemp(prefix="dexstack_bench_gpayn_logs_")
    started = time.monotonic()
    procs = start_nodes(specs, env=node_environment(domain, extra), log_dir=log_dir)
    client = RosClient("bench_gpayn_listener", domain)
    policy_diag: dict[str, str] = {}
    rtf: list[float] = []
    planner: dict[str, dict[str, str]] = {}  # episode -> the planner's values
    answers = {"chunks": 0, "holds": 0}
    measuring = {"on": False}
    # Wall clock, both ends seen by this listener: a joint state's arrival -> the trajectory
    # answering it (stamped with that state's stamp). Sim-time figures are quantised to /clock.
    state_arrival: dict[int, float] = {}
    state_to_trajectory_ms: list[float] = []

    def on_diag(msg: Any) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if status.name.endswith("/policy"):
                policy_diag.clear()
                policy_diag.update(values, message=status.message)
            elif status.name.endswith("/sim") and measuring["on"] and _float(values, "rtf") is not None:
                rtf.append(float(values["rtf"]))
            elif status.name.endswith("/grasp_planner") and values.get("fit_s"):
                planner[values.get("episode", "?")] = values

    def on_state(msg: JointState) -> None:
        if measuring["on"]:
            state_arrival[_stamp_ns(msg.header.stamp)] = time.monotonic()

    def on_answer(msg: JointTrajectory) -> None:
        if measuring["on"]:
            answers["chunks" if msg.points else "holds"] += 1
            arrived = state_arrival.get(_stamp_ns(msg.header.stamp))
            if msg.points and arrived is not None:
                state_to_trajectory_ms.append((time.monotonic() - arrived) * 1e3)
        elif msg.points:
            answers["first"] = 1

    client.node.create_subscription(
        DiagnosticArray, "/diagnostics", on_diag, QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    )
    client.node.create_subscription(JointState, contract.JOINT_STATES, on_state, common.QOS[contract.QoSKind.STATE_PUB])
    client.node.create_subscription(
        JointTrajectory,
        ADROIT.policy_output_topic,
        on_answer,
        QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE),
    )
    try:
        if not client.spin_until(lambda: "first" in answers, startup_timeout_s):
            raise RuntimeError(
                f"no trajectory from the policy node within {startup_timeout_s:.0f} s; last policy "
                f"status: {policy_diag.get('message')!r}; node logs in {log_dir}"
            )
        startup_s = time.monotonic() - started
        measuring["on"] = True
        client.spin_for(seconds)
        measuring["on"] = False
        client.spin_for(1.5)  # the diagnostics message (1 Hz) that covers the last second
    finally:
        client.close()
        codes = stop_nodes(procs)
    shutil.rmtree(log_dir, ignore_errors=True)  # kept only when the run failed (named in the error)
    keys = [
        "inference_ms_p50",
        "inference_ms_p99",
        "compute_ms_p50",
        "compute_ms_p99",
        "e2e_ms_p50",
        "e2e_ms_p99",
        "observation_age_ms_p99",
        "loop_period_ms_p50",
        "loop_jitter_ms_p99",
    ]
    fits = [float(v["fit_s"]) * 1e3 for v in planner.values()]
    return {
        "launch": launch_args,
        "nodes": [s.name for s in specs],
        "seconds": seconds,
        "startup_to_first_trajectory_s": round(startup_s, 1),
        **{k: _float(policy_diag, k) for k in keys},
        "node_chunks_total": int(policy_diag.get("chunks", 0) or 0),
        "node_holds_total": int(policy_diag.get("hold_count", 0) or 0),
        "last_hold_reason": policy_diag.get("last_hold_reason", ""),
        "answers_in_window": answers["chunks"],
        "holds_in_window": answers["holds"],
        "answers_per_s": round(answers["chunks"] / seconds, 1),
        "listener_state_to_trajectory_ms": (
            percentiles(state_to_trajectory_ms) | {"n": len(state_to_trajectory_ms)} if state_to_trajectory_ms else None
        ),
        "sim_rtf_mean": round(float(np.mean(rtf)), 3) if rtf else None,
        "sim_rtf_min": round(float(np.min(rtf)), 3) if rtf else None,
        "planner_episodes": len(planner),
        "planner_fit_ms": [round(v, 1) for v in fits],
        "planner_points": [int(v.get("points", 0)) for v in planner.values()],
        "exit_codes": codes,
    }


# --- main --------------------------------------------------------------------------------------


def check_args(args: argparse.Namespace) -> tuple[str, ...]:
    """Validate the arguments; returns the parts to run. ValueError says what is wrong."""
    for name in ("calls", "placements", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if not (np.isfinite(args.seconds) and args.seconds > 0):
        raise ValueError(f"--seconds must be a positive number, got {args.seconds}")
    skip = {s for s in (args.skip or "").split(",") if s}
    unknown = skip - set(PARTS)
    if unknown:
        raise ValueError(f"--skip: unknown part(s) {sorted(unknown)}; parts are {', '.join(PARTS)}")
    if args.run is not None and not args.run.is_dir():
        raise ValueError(f"--run {args.run} is not a directory")
    return tuple(p for p in PARTS if p not in skip)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", help="gpayn policy in the store, NAME or NAME@VERSION (default: build one)")
    parser.add_argument("--run", type=Path, help="training run: the actor (without --policy) or the torch weights")
    parser.add_argument("--calls", type=int, default=1000, help="timed inference calls per backend")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls per backend first")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of torch and onnxruntime")
    parser.add_argument("--placements", type=int, default=5, help="placements per object in the fit part")
    parser.add_argument("--seconds", type=float, default=15.0, help="node part: seconds measured")
    parser.add_argument("--object", default="potted_meat_can", help="node part: the hand sim's object")
    parser.add_argument("--skip", help=f"comma-separated parts to skip ({', '.join(PARTS)})")
    args = parser.parse_args(argv)
    parts = check_args(args)

    import torch

    from dexstack.policies.gpayn.env import HELD_OUT_OBJECTS, TRAIN_OBJECTS

    torch.set_num_threads(args.threads)
    t_start = time.monotonic()
    out: dict[str, Any] = {"bench": "gpayn", "parts": list(parts)}
    with tempfile.TemporaryDirectory(prefix="bench_gpayn_") as tmp_name:
        tmp = Path(tmp_name)
        actor = None
        if "inference" in parts or "node" in parts:
            if args.policy:
                actor = store_actor(args.policy, args.run)
                size = image_size_of(actor.manifest)
                observations, raw = real_observations(size, 8)
            else:
                observations, raw = real_observations((64, 64), 8)
                actor = run_actor(args.run, tmp) if args.run else untrained_actor(tmp, observations)
                if image_size_of(actor.manifest) != (64, 64):
                    observations, raw = real_observations(image_size_of(actor.manifest), 8)
            out["actor"] = actor.source
            log(f"actor: {actor.source['kind']} ({actor.store_ref})")
        if "inference" in parts:
            out["inference"] = bench_inference(actor, observations, raw, args.calls, args.warmup, args.threads)
            inf = out["inference"]
            log(
                f"inference: ort p50 {inf['onnxruntime']['p50_ms']} ms, torch p50 {inf['torch_eager']['p50_ms']} ms, "
                f"ratio {inf['ratio_torch_over_ort_p50']}"
            )
        if "fit" in parts:
            out["grasp_fit"] = bench_fit(TRAIN_OBJECTS + HELD_OUT_OBJECTS, args.placements, FIT_SEED)
        if "node" in parts:
            domain = 100 + os.getpid() % 100  # this run's own DDS domain
            log(f"node: ROS_DOMAIN_ID {domain}, {args.seconds:.0f} s")
            out["policy_node"] = bench_node(actor, args.seconds, args.object, domain)
    out["wall_s"] = round(time.monotonic() - t_start, 1)
    out["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
    }
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
