"""Export a trained G-PAYN policy: `encoder.onnx` + `actor.onnx` + `manifest.json`.

Serving runs image -> `encoder.onnx` -> features -> `actor.onnx` -> action, in onnxruntime only
(`runtime.py`). Graphs (legacy TorchScript exporter, opset 17, dynamic batch axis):
- `encoder.onnx`: `image` (B, 64, 64, 3) float32 = uint8 pixels / 255 -> `features` (B, F).
- `actor.onnx`: one input per observation key, in the SAC spec's order, each (B, dim) float32
  already normalised ((raw - mean) / std); the graph clips them to +-obs_clip, concatenates them
  and returns `action` (B, A) = tanh(mean): the deterministic action in [-1, 1].

Where normalisation lives: in the manifest, applied by the runtime (the clip is in the graph, it
has no statistics). That is the convention of the other families (bc, diffusion): the statistics
stay visible and checkable next to the input they belong to, and one runtime helper applies them.
The visual features' statistics are under `runtime.visual`, since `visual` is not an input the
robot publishes but what the encoder makes of the `image` input.

The manifest (schema 2) describes what the robot serves: its `inputs` are the raw robot inputs
(every ADROIT joint, one wrench per tactile pad, the latched grasp target pose, the camera image
centre-cropped and resized to the encoder's size), its `outputs` a one-point joint chunk over
ADROIT's joints, one action period ahead. Everything the actor needs is under `runtime`: its
observation (GraspEnv's keys, each with its statistics and what it reads from the raw inputs,
`serving.READS`), the visual features, and what an action is (`runtime.action`: names, scales,
period; its meaning is `action.py`'s).

The export fails with `ExportError`, leaving nothing behind, unless each graph reproduces torch
within `atol` on sample inputs AND the runtime built from the written directory reproduces the
torch policy (raw observation -> action) within `atol`.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dexstack import contract
from dexstack.hardware.profiles import ADROIT
from dexstack.policies.common import normalization
from dexstack.policies.common.export import export_checked, write_policy_dir
from dexstack.policies.common.export_check import ExportError
from dexstack.policies.gpayn.action import ACTION_DIM, ACTION_NAMES, ACTION_SCALES
from dexstack.policies.gpayn.encoder import IMAGE_SCALE, ImageEncoder, encoder_hash
from dexstack.policies.gpayn.sac import SAC, Actor, ObservationNormalizer, check_spec

FAMILY = "gpayn"
ACTOR_FILE, ENCODER_FILE = "actor.onnx", "encoder.onnx"
ACTION_OUTPUT, FEATURES_OUTPUT, IMAGE_INPUT = "action", "features", "image"
VECTOR_KIND = "vector"

# The raw robot inputs (manifest `inputs`) and how each GraspEnv observation key is computed from
# them on the robot (`serving.READS`).
JOINTS_INPUT, GRASP_INPUT = "joint_states", "grasp_target"
PAD_INPUTS = tuple(f"tactile/{pad}" for pad in ADROIT.tactile_pads)
GRASP_ENV_READS: dict[str, dict[str, Any]] = {
    "hand_joints": {"read": "joint_positions", "input": JOINTS_INPUT, "names": list(ADROIT.joint_names[6:])},
    "touch": {"read": "tactile", "inputs": list(PAD_INPUTS), "layout": "flags_and_forces"},
    "ee_pose": {"read": "palm_pose", "input": JOINTS_INPUT},
    "grasp_center": {"read": "grasp_position", "input": GRASP_INPUT},
    "grasp_center_in_palm": {"read": "grasp_position_in_palm", "input": GRASP_INPUT, "joints_input": JOINTS_INPUT},
}


def robot_inputs(observation: list[dict[str, Any]], camera: str) -> list[dict[str, Any]]:
    """The raw inputs (schema 2) the actor observation `observation` reads: the joint states
    always (the commanded joints' measured state), the pads, the grasp target and the camera only
    when some key reads them. Pads go out with the joint states, so they share their age limit."""
    used = (
        {spec.get("input") for spec in observation}
        | {spec.get("joints_input") for spec in observation}
        | {pad for spec in observation for pad in spec.get("inputs", [])}
    )
    inputs: list[dict[str, Any]] = [
        {
            "name": JOINTS_INPUT,
            "kind": "joint_positions",
            "source": contract.JOINT_STATES,
            "shape": [ADROIT.n_joints],
            "dtype": "float64",
            "names": list(ADROIT.joint_names),
            "max_age_s": contract.JOINT_STATE_MAX_AGE_S,
        }
    ]
    inputs += [
        {
            "name": name,
            "kind": "wrench",
            "source": contract.tactile_topic(pad),
            "shape": [6],
            "dtype": "float64",
            "max_age_s": contract.JOINT_STATE_MAX_AGE_S,
        }
        for name, pad in zip(PAD_INPUTS, ADROIT.tactile_pads, strict=True)
        if name in used
    ]
    if GRASP_INPUT in used:
        # Published once per episode by the grasp planner: latched, never stale.
        inputs.append(
            {
                "name": GRASP_INPUT,
                "kind": "pose",
                "source": contract.GRASP_TARGET_POSE,
                "shape": [7],
                "dtype": "float64",
                "latched": True,
            }
        )
    for spec in observation:
        if spec["kind"] == "rgb":
            inputs.append(
                {
                    "name": spec["input"],
                    "kind": "rgb",
                    "source": contract.camera_color_topic(camera),
                    "shape": list(spec["shape"]),
                    "dtype": "uint8",
                    "preprocess": "center_crop_resize",
                    "max_age_s": contract.CAMERA_MAX_AGE_S,
                }
            )
    return inputs


class ActorGraph(nn.Module):
    """What `actor.onnx` computes: normalised per-key inputs -> clip -> concat -> tanh(mean)."""

    def __init__(self, actor: Actor, clip: float) -> None:
        super().__init__()
        self.actor, self.clip = actor, float(clip)

    def forward(self, *normalized: torch.Tensor) -> torch.Tensor:
        obs = torch.cat([x.clamp(-self.clip, self.clip) for x in normalized], dim=-1)
        return self.actor.deterministic(obs)


def export_encoder_onnx(
    encoder: ImageEncoder, path: str | Path, atol: float = 1e-5, check_images: np.ndarray | None = None
) -> float:
    """Write the encoder to ONNX at `path` (input `image` float32 (B, H, W, 3) in [0, 1], output
    `features`); checks batch 1 and 3 of random-pixel images, and `check_images` (uint8
    (N, H, W, 3), e.g. rendered scenes: flat regions are the numerically hard case) if given,
    against torch on the CPU. Returns the largest absolute difference; raises ExportError (and
    removes the file) above `atol`."""
    if not isinstance(encoder, ImageEncoder):
        raise TypeError(f"expected an ImageEncoder, got {type(encoder).__name__}")
    path = Path(path)
    model = copy.deepcopy(encoder).cpu().eval()  # the CPU reference (cuDNN may use TF32 on a GPU)
    gen = torch.Generator().manual_seed(0)

    def images(batch: int) -> tuple[torch.Tensor]:
        pixels = torch.randint(0, 256, (batch, *model.image_hw, 3), generator=gen)
        return (pixels.to(torch.float32) * IMAGE_SCALE,)

    batches = [images(1), images(3)]
    if check_images is not None:
        if (
            not isinstance(check_images, np.ndarray)
            or check_images.dtype != np.uint8
            or check_images.shape[1:] != (*model.image_hw, 3)
        ):
            raise ValueError(f"check_images must be uint8 (N, {model.image_hw[0]}, {model.image_hw[1]}, 3)")
        batches.append((torch.as_tensor(check_images).to(torch.float32) * IMAGE_SCALE,))
    return export_checked(
        model, path, [IMAGE_INPUT], FEATURES_OUTPUT, list(images(1)), [list(b) for b in batches], atol
    )


def export_actor_onnx(sac: SAC, path: str | Path, atol: float = 1e-5) -> float:
    """Write the deterministic actor to ONNX at `path` (one normalised input per spec key, output
    `action`); checks batch 1 and 4 of N(0, 2) inputs (so the clip is exercised too) against torch.
    Returns the largest absolute difference; raises ExportError (and removes the file) above `atol`."""
    if not isinstance(sac, SAC):
        raise TypeError(f"expected a SAC, got {type(sac).__name__}")
    path = Path(path)
    model = ActorGraph(copy.deepcopy(sac.actor).cpu(), sac.config.obs_clip).eval()
    names = list(sac.spec)
    gen = torch.Generator().manual_seed(1)

    def inputs(batch: int) -> tuple[torch.Tensor, ...]:
        return tuple(2.0 * torch.randn(batch, dim, generator=gen) for dim in sac.spec.values())

    return export_checked(model, path, names, ACTION_OUTPUT, list(inputs(1)), [list(inputs(1)), list(inputs(4))], atol)


def _mean_std(normalizer: ObservationNormalizer, key: str) -> dict[str, Any]:
    stats = normalizer.stats()[key]
    return normalization.mean_std(stats["mean"], stats["std"])


def build_manifest(
    sac: SAC,
    encoder: ImageEncoder | None,
    *,
    visual_key: str = "visual",
    image_key: str = "image",
    camera: str = "scene",
    action_names: list[str] | None = None,
    action_scales: list[float] | None = None,
    dt: float = 1.0 / contract.POLICY_HZ,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest (schema 2, see the module docstring) of an export directory (the store adds
    name, version and file checksums).

    The actor's observation (`runtime.observation`): every spec key but `visual_key`, a GraspEnv
    key (GRASP_ENV_READS), as a vector (mean_std normalisation from the SAC's normalisers), plus
    `image_key` (uint8 (H, W, 3), scale 1/255) when there is an encoder. `action_names` /
    `action_scales` (A entries each; default GraspEnv's for an 11-dim action): what each action
    element commands and its physical size at +-1 (metres, radians); `dt`: the action period (s)."""
    spec = check_spec(sac.spec)
    has_visual = visual_key in spec
    if has_visual and encoder is None:
        raise ValueError(f"the SAC spec has {visual_key!r} (image features): pass the encoder that made them")
    if encoder is not None and not has_visual:
        raise ValueError(f"an encoder was given but the SAC spec {spec} has no {visual_key!r} key")
    if has_visual and spec[visual_key] != encoder.feature_dim:
        raise ValueError(
            f"spec[{visual_key!r}] = {spec[visual_key]} but the encoder makes {encoder.feature_dim} features"
        )
    if has_visual and image_key in spec:
        raise ValueError(f"image_key {image_key!r} collides with a vector key of the spec")
    unknown = [key for key in spec if key != visual_key and key not in GRASP_ENV_READS]
    if unknown:
        raise ValueError(
            f"spec keys {unknown} are not GraspEnv observation keys {sorted(GRASP_ENV_READS)}: "
            "the robot cannot compute them"
        )
    if sac.action_dim == ACTION_DIM:
        action_names = list(ACTION_NAMES) if action_names is None else action_names
        action_scales = list(ACTION_SCALES) if action_scales is None else action_scales
    for name, values in (("action_names", action_names), ("action_scales", action_scales)):
        if values is not None and len(values) != sac.action_dim:
            raise ValueError(f"{name} has {len(values)} entries, the action has {sac.action_dim}")
    if action_scales is not None and not all(np.isfinite(s) and s > 0 for s in action_scales):
        raise ValueError(f"action_scales must be finite and > 0, got {action_scales}")
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number of seconds, got {dt}")

    observation: list[dict[str, Any]] = []
    for key, dim in spec.items():
        if key == visual_key:
            continue
        observation.append(
            {
                "name": key,
                "kind": VECTOR_KIND,
                "shape": [dim],
                "dtype": "float32",
                "normalization": _mean_std(sac.normalizer, key),
                **copy.deepcopy(GRASP_ENV_READS[key]),
            }
        )
    graphs = {"actor": ACTOR_FILE}
    runtime: dict[str, Any] = {"actor_inputs": list(spec), "obs_clip": sac.config.obs_clip}
    if has_visual:
        graphs["encoder"] = ENCODER_FILE
        observation.append(
            {
                "name": image_key,
                "kind": "rgb",
                "shape": [*encoder.image_hw, 3],
                "dtype": "uint8",
                "normalization": {"type": "scale", "scale": IMAGE_SCALE},
                "read": "rgb",
                "input": image_key,
            }
        )
        runtime["visual"] = {
            "key": visual_key,
            "image_input": image_key,
            "feature_dim": encoder.feature_dim,
            "normalization": _mean_std(sac.normalizer, visual_key),
            "encoder_hash": encoder_hash(encoder),
        }
    runtime["observation"] = observation
    runtime["action"] = {
        "dim": sac.action_dim,
        "range": [-1.0, 1.0],
        "dt": float(dt),
        "names": list(action_names) if action_names is not None else None,
        "scales": [float(s) for s in action_scales] if action_scales is not None else None,
    }
    outputs = {
        "kind": "joint_position_chunk",
        "joint_names": list(ADROIT.joint_names),
        "chunk_length": 1,
        "dt": float(dt),
    }
    return {
        "schema_version": 2,
        "family": FAMILY,
        "robot_profile": ADROIT.name,
        "graphs": graphs,
        "inputs": robot_inputs(observation, camera),
        "outputs": outputs,
        "provenance": {
            "code_commit": "unknown",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "sac_config": sac.config.to_dict(),
            "sac_updates": sac.updates,
            **(provenance or {}),
        },
        "evaluation": {},
        "runtime": runtime,
    }


def sample_observations(
    sac: SAC,
    encoder: ImageEncoder | None,
    manifest: dict[str, Any],
    count: int,
    seed: int = 0,
    images: np.ndarray | None = None,
) -> list[dict[str, np.ndarray]]:
    """Actor observations: each vector around its training mean (+- 1.5 std, float32) and a uint8
    image (random pixels, or drawn from `images`); keys are the manifest's `runtime.observation`
    names."""
    rng = np.random.default_rng(seed)
    stats = sac.normalizer.stats()
    out = []
    for _ in range(count):
        obs: dict[str, np.ndarray] = {}
        for spec in manifest["runtime"]["observation"]:
            if spec["kind"] == "rgb":
                obs[spec["name"]] = (
                    images[rng.integers(len(images))]
                    if images is not None
                    else rng.integers(0, 256, spec["shape"], dtype=np.uint8)
                )
            else:
                mean, std = np.asarray(stats[spec["name"]]["mean"]), np.asarray(stats[spec["name"]]["std"])
                obs[spec["name"]] = (mean + 1.5 * std * rng.standard_normal(mean.shape)).astype(np.float32)
        out.append(obs)
    return out


@torch.no_grad()
def torch_policy_action(
    sac: SAC, encoder: ImageEncoder | None, manifest: dict[str, Any], observation: dict[str, np.ndarray]
) -> np.ndarray:
    """The torch policy on one actor observation (the actor runtime's input dict), on CPU copies of the
    networks: encoder features for the visual key, normalisers, deterministic actor -> (A,) float32."""
    normalizer = copy.deepcopy(sac.normalizer).cpu()
    actor = copy.deepcopy(sac.actor).cpu().eval()
    obs = {
        key: torch.as_tensor(np.asarray(observation[key], np.float32))[None] for key in sac.spec if key in observation
    }
    visual = (manifest.get("runtime") or {}).get("visual")
    if visual is not None:
        image = torch.as_tensor(observation[visual["image_input"]]).to(torch.float32)[None] * IMAGE_SCALE
        obs[visual["key"]] = copy.deepcopy(encoder).cpu().eval()(image)
    return actor.deterministic(normalizer(obs))[0].numpy()


def export_actor(
    sac: SAC,
    spec: dict[str, int],
    out_dir: str | Path,
    *,
    encoder: ImageEncoder | None = None,
    atol: float = 1e-5,
    checks: int = 8,
    check_images: np.ndarray | None = None,
    **manifest_options: Any,
) -> Path:
    """Export `sac`'s deterministic actor (and `encoder`, when the spec has the visual key) into the
    new directory `out_dir` (must not exist or be empty): the graphs + manifest.json. `spec` must be
    the SAC's own observation spec (a guard against exporting the wrong policy for an env).
    `check_images` (uint8 (N, H, W, 3), e.g. a few training frames) join the random ones in the
    encoder and end-to-end checks. `manifest_options` go to `build_manifest` (action_names,
    action_scales, dt, camera, visual_key, image_key, provenance). Written into a temporary sibling and renamed; nothing is left behind if any
    check fails."""
    if not isinstance(sac, SAC):
        raise TypeError(f"expected a SAC, got {type(sac).__name__}")
    if check_spec(spec) != sac.spec or list(spec) != list(sac.spec):
        raise ValueError(f"spec {spec} is not the SAC's observation spec {sac.spec} (keys, dims and order)")
    manifest = build_manifest(sac, encoder, **manifest_options)

    def write_graphs(tmp: Path) -> dict[str, float]:
        diffs = {"actor": export_actor_onnx(sac, tmp / ACTOR_FILE, atol)}
        if "encoder" in manifest["graphs"]:
            diffs["encoder"] = export_encoder_onnx(encoder, tmp / ENCODER_FILE, atol, check_images)
        diffs["runtime"] = check_runtime_matches(sac, encoder, tmp, manifest, atol, checks)
        if check_images is not None:
            diffs["runtime"] = max(
                diffs["runtime"], check_runtime_matches(sac, encoder, tmp, manifest, atol, checks, check_images)
            )
        return diffs

    return write_policy_dir(out_dir, manifest, write_graphs)


def check_runtime_matches(
    sac: SAC,
    encoder: ImageEncoder | None,
    policy_dir: Path,
    manifest: dict[str, Any],
    atol: float = 1e-5,
    count: int = 8,
    images: np.ndarray | None = None,
) -> float:
    """The actor end to end: the actor runtime built from `policy_dir` against the torch policy on
    `count` sample observations (images from `images` if given). Returns the largest absolute
    difference; raises ExportError."""
    from dexstack.policies.gpayn.runtime import Runtime

    runtime = Runtime(policy_dir, manifest)
    worst = 0.0
    for obs in sample_observations(sac, encoder, manifest, count, images=images):
        worst = max(worst, float(np.max(np.abs(runtime.act(obs) - torch_policy_action(sac, encoder, manifest, obs)))))
    if not worst <= atol:
        raise ExportError(
            f"the gpayn actor runtime and the torch policy differ by {worst:.3g} (> {atol:g}) on sample "
            "observations; nothing written"
        )
    return worst


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """`dexstack export --run RUN` for a G-PAYN training run: its actor (+ encoder) with
    `export_actor`: the run's normaliser, GraspEnv's action names and scales, dt = 1 / CONTROL_HZ;
    up to 16 of the run's pretraining frames join the torch/onnxruntime agreement checks. The
    manifest is the schema-2 one the policy node serves as it is. Returns the export directory."""
    from dexstack.policies.gpayn.config import FRAMES_FILE
    from dexstack.policies.gpayn.env import CONTROL_HZ
    from dexstack.policies.gpayn.evaluate import load_policy

    run_dir = Path(run_dir)
    policy, config = load_policy(run_dir)
    check_images = None
    if policy.encoder is not None and (run_dir / FRAMES_FILE).is_file():
        with np.load(run_dir / FRAMES_FILE) as frames:
            check_images = frames["images"][:16]
    run_info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    history = json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").is_file() else []
    # The run directory's name, not its path: no machine paths in a shipped manifest.
    provenance = {
        "run": run_dir.name,
        "code_commit": run_info.get("code_commit", "unknown"),
        "config": config.to_dict(),
        "env_steps": history[-1]["step"] if history else None,
        "last_evaluation": ({k: history[-1][k] for k in ("step", "success_rate", "mean_return")} if history else None),
    }
    out = export_actor(
        policy.sac,
        policy.sac.spec,
        out_dir,
        encoder=policy.encoder,
        check_images=check_images,
        action_names=list(ACTION_NAMES),
        action_scales=list(ACTION_SCALES),
        dt=1.0 / CONTROL_HZ,
        provenance=provenance,
    )
    return out
