"""The BC policy network and its normalisation (torch; training, export and reference only).

Network input, per observation: joint positions normalised with per-joint mean/std, and one
RGB image (H, W, 3) per camera scaled to [0, 1]. Output: a chunk (H_chunk, J) of normalised
targets. With `predict_relative` the targets are `action[k + i] - joint_positions[k]`
(radians / metres, in the dataset's joint order), normalised per (i, joint); absolute joint
targets are `joint_positions + target * std + mean`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dexstack import contract
from dexstack.policies.bc.config import BCConfig
from dexstack.policies.common.vision import IMAGE_SCALE, ConvKeypointEncoder


@dataclass
class NormalizationStats:
    """Statistics computed on the training episodes; exported into the manifest."""

    joint_mean: np.ndarray  # (J,) rad / m
    joint_std: np.ndarray  # (J,)
    target_mean: np.ndarray  # (H, J) rad / m (relative to the current joint positions if relative)
    target_std: np.ndarray  # (H, J)
    relative: bool
    delta_mean: np.ndarray | None = None  # (J,) per-step joint motion, rad / m (None: not an input)
    delta_std: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "joint_mean": self.joint_mean.tolist(),
            "joint_std": self.joint_std.tolist(),
            "target_mean": self.target_mean.tolist(),
            "target_std": self.target_std.tolist(),
            "relative": self.relative,
            "delta_mean": None if self.delta_mean is None else self.delta_mean.tolist(),
            "delta_std": None if self.delta_std is None else self.delta_std.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NormalizationStats:
        delta = {k: None if d.get(k) is None else np.asarray(d[k], np.float32) for k in ("delta_mean", "delta_std")}
        return cls(
            np.asarray(d["joint_mean"], np.float32),
            np.asarray(d["joint_std"], np.float32),
            np.asarray(d["target_mean"], np.float32),
            np.asarray(d["target_std"], np.float32),
            bool(d["relative"]),
            **delta,
        )


class BCPolicy(nn.Module):
    """Per-camera keypoint encoders + an MLP head predicting a normalised chunk of joint targets."""

    def __init__(self, config: BCConfig, n_joints: int, image_hw: dict[str, tuple[int, int]]) -> None:
        super().__init__()
        self.cameras = tuple(config.cameras)
        self.chunk_length = config.chunk_length
        self.n_joints = n_joints
        self.uses_joint_delta = config.joint_delta_input
        self.encoders = nn.ModuleDict(
            {
                cam: ConvKeypointEncoder(
                    *image_hw[cam],
                    channels=tuple(config.conv_channels),
                    num_keypoints=config.num_keypoints,
                    groups=config.group_norm_groups,
                )
                for cam in self.cameras
            }
        )
        width = n_joints * (2 if self.uses_joint_delta else 1) + sum(enc.out_dim for enc in self.encoders.values())
        layers: list[nn.Module] = []
        for _ in range(config.hidden_layers):
            layers += [nn.Linear(width, config.hidden_dim), nn.ReLU(inplace=True)]
            width = config.hidden_dim
        layers.append(nn.Linear(width, self.chunk_length * n_joints))
        self.head = nn.Sequential(*layers)

    def forward(self, joint_positions: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        """joint_positions (B, J) normalised; then, if `uses_joint_delta`, the normalised joint delta
        (B, J); then images (B, H, W, 3) in `self.cameras` order, scaled.
        Returns (B, chunk_length, J) normalised targets."""
        features = [joint_positions]
        if self.uses_joint_delta:
            features.append(rest[0])
            rest = rest[1:]
        features += [self.encoders[cam](img) for cam, img in zip(self.cameras, rest, strict=True)]
        out = self.head(torch.cat(features, dim=1))
        return out.reshape(-1, self.chunk_length, self.n_joints)


JOINT_DELTA = "joint_positions_delta"  # graph input computed by the runtime, not an observation key


def input_names(cameras: tuple[str, ...], joint_delta: bool) -> list[str]:
    """Graph input names, in forward() order: observation keys of the contract (+ the joint delta)."""
    return [contract.JOINT_POSITIONS] + ([JOINT_DELTA] if joint_delta else []) + [contract.rgb_key(c) for c in cameras]


class Normalizer(nn.Module):
    """The normalisation as torch ops, for training batches and the torch reference prediction."""

    def __init__(self, stats: NormalizationStats) -> None:
        super().__init__()
        self.relative = stats.relative
        for name in ("joint_mean", "joint_std", "target_mean", "target_std", "delta_mean", "delta_std"):
            value = getattr(stats, name)
            value = np.zeros(1, np.float32) if value is None else value
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32))

    def joints(self, q: torch.Tensor) -> torch.Tensor:
        return (q - self.joint_mean) / self.joint_std

    def deltas(self, dq: torch.Tensor) -> torch.Tensor:
        return (dq - self.delta_mean) / self.delta_std

    @staticmethod
    def image(rgb_uint8: torch.Tensor) -> torch.Tensor:
        return rgb_uint8.to(torch.float32) * IMAGE_SCALE

    def targets(self, actions: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """actions (B, H, J) absolute, q (B, J) -> normalised training targets."""
        if self.relative:
            actions = actions - q[:, None, :]
        return (actions - self.target_mean) / self.target_std

    def absolute(self, normalised: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        out = normalised * self.target_std + self.target_mean
        return out + q[:, None, :] if self.relative else out


@torch.no_grad()
def predict_chunk(
    model: BCPolicy,
    normalizer: Normalizer,
    observation: dict[str, np.ndarray],
    previous_joint_positions: np.ndarray | None = None,
) -> np.ndarray:
    """Torch reference for one observation -> (chunk_length, J) absolute joint targets (float64).
    `previous_joint_positions`: the observation one policy step earlier (None: first step)."""
    model.eval()
    q = torch.as_tensor(np.asarray(observation[contract.JOINT_POSITIONS], np.float32))[None]
    extra = []
    if model.uses_joint_delta:
        prev = (
            q
            if previous_joint_positions is None
            else torch.as_tensor(np.asarray(previous_joint_positions, np.float32))[None]
        )
        extra.append(normalizer.deltas(q - prev))
    images = [
        normalizer.image(torch.as_tensor(np.asarray(observation[contract.rgb_key(cam)]))[None]) for cam in model.cameras
    ]
    out = normalizer.absolute(model(normalizer.joints(q), *extra, *images), q)
    return out[0].numpy().astype(np.float64)
