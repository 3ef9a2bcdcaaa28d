"""Per-frame observation encoder and denoiser construction (torch; training, export, reference).

The encoder maps ONE frame (normalised joint positions (B, J) and one scaled RGB image
(B, H, W, 3) per camera) to features (B, F). The condition of the denoiser is the features of
the To most recent frames concatenated oldest first, (B, To * F): encoding per frame lets the
runtime keep a feature history instead of re-encoding old frames, and lets a trainer cache
embeddings of every frame (PTP's multistage training).
"""

from __future__ import annotations

import torch
from torch import nn

from dexstack import contract
from dexstack.policies.common.vision import ConvKeypointEncoder
from dexstack.policies.diffusion.config import DiffusionConfig
from dexstack.policies.diffusion.denoisers import CausalTransformerDenoiser, ConditionalUnet1D

IMAGE_SCALE = 1.0 / 255.0  # uint8 -> [0, 1]


class ObservationEncoder(nn.Module):
    """Keypoint CNN per camera (GroupNorm + spatial softmax, trained from scratch) + proprioception."""

    def __init__(self, config: DiffusionConfig, n_joints: int, image_hw: dict[str, tuple[int, int]]) -> None:
        super().__init__()
        self.cameras = tuple(config.cameras)
        self.n_joints = n_joints
        self.cnns = nn.ModuleDict({
            cam: ConvKeypointEncoder(*image_hw[cam], channels=tuple(config.conv_channels),
                                     num_keypoints=config.num_keypoints, groups=config.group_norm_groups,
                                     pooled_features=config.pooled_features)
            for cam in self.cameras})
        self.out_dim = n_joints + sum(cnn.out_dim for cnn in self.cnns.values())

    def input_names(self) -> list[str]:
        """Graph input names in forward() order: observation keys of the contract."""
        return [contract.JOINT_POSITIONS] + [contract.rgb_key(c) for c in self.cameras]

    def forward(self, joint_positions: torch.Tensor, *images: torch.Tensor) -> torch.Tensor:
        """joint_positions (B, J) normalised, images (B, H, W, 3) scaled, in `cameras` order -> (B, F);
        F = J + (2 * keypoints + pooled features) per camera (keypoints in image coordinates, [-1, 1])."""
        feats = [joint_positions] + [self.cnns[c](img) for c, img in zip(self.cameras, images, strict=True)]
        return torch.cat(feats, dim=1)


def build_denoiser(config: DiffusionConfig, action_dim: int, cond_dim: int) -> nn.Module:
    """The configured denoiser for actions (B, horizon, action_dim) and condition (B, cond_dim)."""
    if config.denoiser == "unet":
        return ConditionalUnet1D(action_dim, cond_dim, config.step_embed_dim, tuple(config.down_dims),
                                 config.kernel_size, config.unet_groups)
    return CausalTransformerDenoiser(action_dim, cond_dim, config.horizon, config.d_model, config.n_heads,
                                     config.n_layers, cond_tokens=config.n_obs_steps,
                                     step_embed_dim=config.step_embed_dim, dropout=config.dropout)
