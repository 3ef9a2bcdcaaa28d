"""G-PAYN's training settings: `GPAYNConfig` (everything a run depends on; its defaults are the
recipe behind the documented results, docs/GPAYN.md) and the names of a run directory's files.
Read by the trainer, the evaluator (loading a run's policy) and the exporter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dexstack.policies.common import runs
from dexstack.policies.gpayn.env import MAX_EPISODE_STEPS, TRAIN_OBJECTS
from dexstack.policies.gpayn.sac import SACConfig
from dexstack.sim import objects as objects_lib

CHECKPOINT = runs.CHECKPOINT
ENCODER_FILE = "encoder.pt"
FRAMES_FILE = "frames.npz"
VISUAL_KEY = "visual"
# Std of the Gaussian noise on each normalised observation key in every SAC update: the keys whose
# values a new object's shape and size shift. Touch and grasp_center_in_palm stay clean.
SHAPE_DEPENDENT_NOISE = {VISUAL_KEY: 2.0, "ee_pose": 2.0, "grasp_center": 2.0, "hand_joints": 1.0}


@dataclass
class GPAYNConfig:
    """Everything a run depends on; written to the run's config.json (a resumed run keeps it)."""

    objects: tuple[str, ...] = TRAIN_OBJECTS
    n_envs: int = len(TRAIN_OBJECTS)  # env i grasps objects[i % len(objects)]: one env per object
    total_steps: int = 6_000  # env steps (all envs together), demonstrations not counted
    demo_episodes: int = 150  # scripted episodes pre-filled (round robin over objects); 0 = SAC from scratch
    # Share of every SAC batch drawn from the demonstrations, which are never overwritten (G-PAYN's
    # code samples half of each batch from its demonstration buffer); 0 = demos are ordinary replay.
    demo_batch_fraction: float = 0.5
    random_steps: int = 1_000  # uniform random actions first, only without demonstrations
    batch_size: int = 256
    utd_ratio: float = 1.0  # SAC updates per env step
    buffer_capacity: int = 200_000
    normalizer_steps: int = 5_000  # observation statistics learn from new states until this env step
    seed: int = 0
    eval_interval: int = 2_000  # env steps between deterministic evaluations
    eval_episodes: int = 4  # per object and evaluation
    checkpoint_interval: int = 1_000  # env steps
    render: bool = True  # camera on: vision-planned grasp + image features; off: oracle grasp, no images
    image_size: tuple[int, int] = (64, 64)  # (width, height) of the policy's image
    max_episode_steps: int = MAX_EPISODE_STEPS
    # Objects whose frames pretrain the frozen encoder; None = the training objects. (Twelve
    # catalogue objects instead of the five training ones did not help on the validation objects.)
    pretrain_objects: tuple[str, ...] | None = None
    pretrain_frames: int = 2_000
    pretrain_epochs: int = 10
    feature_dim: int = 64
    # What learns at this budget (docs/GPAYN.md "Training recipe"): a low initial temperature (the
    # entropy bonus at alpha 1 outweighs the +-1 task reward for thousands of steps), LayerNorm
    # critics and a behaviour-cloning term on the demo rows that holds the actor near the
    # demonstrations (with the Q-filter, overestimated critics switched it off and the actor
    # drifted away). bc_weight 0 is G-PAYN's own recipe. Noise on the inputs that shift with an
    # object's shape and size (image features, absolute palm and grasp positions, hand joint angles)
    # keeps the actor working on objects it never saw: it decides from touch and the grasp pose
    # relative to the palm (chosen on validation objects, not the held-out ones: docs/GPAYN.md).
    sac: SACConfig = field(
        default_factory=lambda: SACConfig(
            initial_alpha=0.05,
            critic_layer_norm=True,
            bc_weight=10.0,
            bc_q_filter=False,
            feature_noise=SHAPE_DEPENDENT_NOISE,
        )
    )
    torch_threads: int = 1
    device: str = "auto"  # "auto" = cuda when available, else cpu

    def __post_init__(self) -> None:
        if isinstance(self.sac, dict):
            self.sac = SACConfig.from_dict(self.sac)
        if not isinstance(self.sac, SACConfig):
            raise TypeError(f"sac must be a SACConfig or a dict of its fields, got {type(self.sac).__name__}")
        for key in ("objects", "pretrain_objects"):
            names = getattr(self, key)
            if names is None and key == "pretrain_objects":
                continue
            if isinstance(names, str):
                raise ValueError(f"{key} must be a sequence of object names, not the string {names!r}")
            unknown = [name for name in names if name not in objects_lib.CATALOG]
            if not names or unknown:
                raise ValueError(f"{key} must name catalogue objects; unknown: {unknown or 'none given'}")
            setattr(self, key, tuple(names))
        self.image_size = tuple(int(v) for v in self.image_size)
        positive = (
            "n_envs",
            "total_steps",
            "batch_size",
            "buffer_capacity",
            "eval_interval",
            "eval_episodes",
            "checkpoint_interval",
            "max_episode_steps",
            "feature_dim",
            "torch_threads",
        )
        non_negative = (
            "demo_episodes",
            "random_steps",
            "normalizer_steps",
            "pretrain_frames",
            "pretrain_epochs",
            "seed",
        )
        for name in positive + non_negative:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"GPAYNConfig.{name} must be an int, got {value!r}")
            if value < (1 if name in positive else 0):
                raise ValueError(f"GPAYNConfig.{name} must be {'> 0' if name in positive else '>= 0'}, got {value}")
        if not (isinstance(self.demo_batch_fraction, int | float) and 0 <= self.demo_batch_fraction < 1):
            raise ValueError(f"GPAYNConfig.demo_batch_fraction must be in [0, 1), got {self.demo_batch_fraction!r}")
        if not (isinstance(self.utd_ratio, int | float) and 0 < self.utd_ratio <= 64):
            raise ValueError(f"GPAYNConfig.utd_ratio must be in (0, 64], got {self.utd_ratio!r}")
        if len(self.image_size) != 2 or min(self.image_size) < 16 or any(v % 16 for v in self.image_size):
            raise ValueError(
                f"image_size must be (width, height), multiples of 16 (the encoder's 4 stride-2 "
                f"layers), got {self.image_size}"
            )
        if self.n_envs < len(self.objects):
            raise ValueError(
                f"n_envs={self.n_envs} < {len(self.objects)} objects: env i grasps objects[i % "
                f"{len(self.objects)}], so {list(self.objects[self.n_envs :])} would never be trained on"
            )
        if self.n_envs > 1000:
            raise ValueError(f"n_envs must be <= 1000 (env seeds are spaced 1000 apart), got {self.n_envs}")
        if self.render and self.pretrain_frames < 2:
            raise ValueError("with render on the encoder is pretrained: pretrain_frames must be >= 2")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPAYNConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GPAYNConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)
