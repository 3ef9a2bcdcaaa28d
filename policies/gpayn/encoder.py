"""The frozen image encoder of G-PAYN: a small GroupNorm CNN pretrained without labels, then frozen.

Why frozen: SAC's critic gradients are a noisy signal to learn convolutions from, and a frozen
encoder lets the trainer compute an image's features once per env step and store them in the
replay buffer (the `visual` key of the SAC observation) instead of storing and re-encoding images.

Pretraining objective (needs nothing the sim does not give for free):
- reconstruct the image, downsampled to 32x32, from the features (a convolutional autoencoder:
  the features must keep where things are and what colour they are);
- optionally, when object masks are given (MuJoCo's segmentation render), also reconstruct the
  mask's coverage of each 32x32 cell (a 4th decoder channel), so the features keep where the
  object is. The history reports the squared error of the reconstructed mask's centroid (image
  coordinates in [-1, 1]) as a readable measure of that. A separate centroid-regression head was
  tried first: its gradient, identical in direction for every image, collapsed the features to a
  constant within a few Adam steps even at weight 0.01; the dense mask channel with the decoder's
  output bias started at the data mean does not (measured on synthetic shapes, tests).
Random shifts of up to `max_shift` pixels (the same shift for input and target) augment the data.

Images enter as float32 (B, H, W, 3) = uint8 pixels * IMAGE_SCALE, channel-last like
sensor_msgs/Image rgb8 (the serving runtime applies that scale from the manifest). Features pass
through LayerNorm and tanh (as in SAC-AE): bounded, so a frozen encoder never feeds SAC outliers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dexstack.policies.common.runs import save_checkpoint
from dexstack.policies.common.vision import random_shift

IMAGE_SCALE = 1.0 / 255.0
IMAGE_SIZE = 64  # G-PAYN's env renders 64x64 RGB
RECONSTRUCTION_SIZE = 32  # the autoencoder rebuilds a 2x downsampled image: colours and layout, not texture


class PreciseGroupNorm(nn.GroupNorm):
    """GroupNorm whose per-group statistics are computed in float64, two-pass (mean, then the mean
    of squared deviations); the normalisation itself stays float32. Why: on flat images a group's
    std is small next to its values, and both torch's float32 CPU kernel (one-pass variance,
    measured 2.4e-4 off float64 after the first layer on synthetic shapes) and onnxruntime's
    float32 ReduceMean over 4096 values (1.9e-5) lose enough to break the 1e-5 torch/onnxruntime
    agreement the export checks. Same parameters and state dict as nn.GroupNorm; exports to plain
    ONNX Cast/ReduceMean ops that onnxruntime runs in double."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        grouped = x.reshape(shape[0], self.num_groups, -1)
        wide = grouped.to(torch.float64)
        mean = wide.mean(dim=-1, keepdim=True)
        variance = ((wide - mean) ** 2).mean(dim=-1, keepdim=True)
        inv_std = torch.rsqrt(variance + self.eps).to(x.dtype)
        y = ((grouped - mean.to(x.dtype)) * inv_std).reshape(shape)
        affine = (1, -1) + (1,) * (len(shape) - 2)
        return y * self.weight.reshape(affine) + self.bias.reshape(affine)


class ImageEncoder(nn.Module):
    """(B, H, W, 3) float in [0, 1] -> (B, feature_dim) in (-1, 1). Four stride-2 3x3 convolutions
    with GroupNorm (64x64 -> 4x4), a linear layer, LayerNorm, tanh."""

    def __init__(
        self,
        feature_dim: int = 64,
        channels: tuple[int, ...] = (32, 64, 64, 128),
        image_hw: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE),
        groups: int = 8,
    ) -> None:
        super().__init__()
        if feature_dim <= 0 or not channels:
            raise ValueError(f"feature_dim must be > 0 and channels non-empty, got {feature_dim}, {channels}")
        stride = 2 ** len(channels)
        if image_hw[0] % stride or image_hw[1] % stride:
            raise ValueError(f"image size {image_hw} must be divisible by {stride} for {len(channels)} stride-2 layers")
        self.feature_dim, self.channels, self.image_hw = int(feature_dim), tuple(channels), tuple(image_hw)
        layers: list[nn.Module] = []
        in_ch = 3
        for out_ch in self.channels:
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1),
                PreciseGroupNorm(min(groups, out_ch), out_ch),
                nn.ReLU(inplace=True),
            ]
            in_ch = out_ch
        self.trunk = nn.Sequential(*layers)
        self.grid_hw = (image_hw[0] // stride, image_hw[1] // stride)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_ch * self.grid_hw[0] * self.grid_hw[1], feature_dim),
            nn.LayerNorm(feature_dim),
            nn.Tanh(),
        )

    def forward(self, image_nhwc: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(image_nhwc.permute(0, 3, 1, 2)))

    def architecture(self) -> dict[str, Any]:
        return {"feature_dim": self.feature_dim, "channels": list(self.channels), "image_hw": list(self.image_hw)}


class Decoder(nn.Module):
    """Pretraining only: features -> (B, C, 32, 32) in [0, 1] (logits through a sigmoid): RGB, and
    with C = 4 the object mask's coverage of each 2x2 block."""

    def __init__(self, feature_dim: int, size: int = RECONSTRUCTION_SIZE, out_channels: int = 3) -> None:
        super().__init__()
        self.start = size // 8
        self.fc = nn.Linear(feature_dim, 128 * self.start * self.start)
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1),
            nn.GroupNorm(8, 64),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.GroupNorm(8, 32),
            nn.ReLU(),
            nn.ConvTranspose2d(32, out_channels, 4, stride=2, padding=1),
        )

    @torch.no_grad()
    def init_output_bias(self, channel_means: np.ndarray) -> None:
        """Start at the data's mean per channel (bias = logit(mean)). Without it the first Adam steps
        all push the outputs toward that mean at once, a gradient so coherent across images that it
        collapses the encoder's features to a constant (seen with the sparse mask channel)."""
        p = torch.as_tensor(np.clip(channel_means, 1e-3, 1 - 1e-3), dtype=torch.float32)
        self.net[-1].bias.copy_(torch.log(p / (1 - p)).to(self.net[-1].bias.device))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.fc(features).reshape(-1, 128, self.start, self.start)
        return torch.sigmoid(self.net(x))


def mask_centroids(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks (B, H, W) with values in [0, 1] (soft masks allowed) -> centroids (B, 2) as (x, y) in
    [-1, 1] (pixel centres, x right, y down; (-1, -1) is the top-left pixel) and (B,) float, 1 where
    the mask holds at least one pixel's worth of object."""
    m = masks.to(torch.float32)
    _, h, w = m.shape
    count = m.sum(dim=(1, 2))
    xs = torch.linspace(-1.0, 1.0, w, device=m.device)
    ys = torch.linspace(-1.0, 1.0, h, device=m.device)
    safe = count.clamp_min(1.0)
    cx = (m.sum(dim=1) * xs).sum(dim=1) / safe
    cy = (m.sum(dim=2) * ys).sum(dim=1) / safe
    return torch.stack([cx, cy], dim=1), (count >= 1.0).to(torch.float32)


def _check_images(images: Any, where: str = "images") -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{where} must be a numpy array (N, H, W, 3) uint8, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"{where} must be uint8 RGB, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise ValueError(f"{where} must have shape (N, H, W, 3) with N >= 1, got {images.shape}")
    return images


def _mean_targets(images: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    """Mean of each reconstruction channel over the data set: R, G, B in [0, 1], then mask coverage."""
    means = [images[..., c].mean() * IMAGE_SCALE for c in range(3)]
    if masks is not None:
        means.append((np.asarray(masks) != 0).mean())
    return np.asarray(means, np.float64)


def _losses(
    encoder: ImageEncoder, decoder: Decoder, images: torch.Tensor, masks: torch.Tensor | None, mask_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """On uint8 images (B, H, W, 3) and 0/1 masks (B, H, W) or None: (total loss, RGB reconstruction
    MSE, mask reconstruction MSE, squared centroid error of the reconstructed mask). The centroid
    error is a readout for the history only; it is not trained on directly (see the docstring)."""
    x = images.to(torch.float32) * IMAGE_SCALE
    out = decoder(encoder(x))
    target = F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), RECONSTRUCTION_SIZE)
    recon = F.mse_loss(out[:, :3], target)
    zero = torch.zeros((), device=x.device)
    if masks is None:
        return recon, recon, zero, zero
    mask_target = F.adaptive_avg_pool2d(masks.to(torch.float32)[:, None], RECONSTRUCTION_SIZE)[:, 0]
    mask_loss = F.mse_loss(out[:, 3], mask_target)
    with torch.no_grad():
        predicted, _ = mask_centroids(out[:, 3])
        actual, visible = mask_centroids(mask_target)
        error = ((predicted - actual) ** 2).sum(-1)
        centroid = (error * visible).sum() / visible.sum().clamp_min(1.0)
    return recon + mask_weight * mask_loss, recon, mask_loss, centroid


def pretrain_encoder(
    images: np.ndarray,
    epochs: int = 20,
    seed: int = 0,
    out_path: str | Path | None = None,
    *,
    masks: np.ndarray | None = None,
    feature_dim: int = 64,
    batch_size: int = 64,
    lr: float = 1e-3,
    val_fraction: float = 0.1,
    max_shift: int = 4,
    mask_weight: float = 3.0,
    device: str | torch.device | None = None,
) -> list[dict[str, float]]:
    """Pretrain an `ImageEncoder` on uint8 images (N, H, W, 3) (and optional object masks (N, H, W),
    nonzero = object, for the mask channel); writes {"encoder": weights, "architecture", "history"}
    to `out_path` (atomically) if given. Returns the history: one dict per epoch (epoch 0 =
    untrained) with train_loss, val_loss, val_recon (RGB MSE), val_mask (mask MSE) and val_centroid
    (squared centroid error of the reconstructed mask); the last two are 0 without masks.
    Validation = a random `val_fraction` of the images, unshifted (the training images themselves
    when that fraction rounds to none)."""
    images = _check_images(images)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != images.shape[:3]:
            raise ValueError(f"masks must have shape {images.shape[:3]} (one per image), got {masks.shape}")
    device = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    n = images.shape[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = ImageEncoder(feature_dim, image_hw=images.shape[1:3]).to(device)
        decoder = Decoder(feature_dim, out_channels=3 if masks is None else 4).to(device)
        decoder.init_output_bias(_mean_targets(images, masks))
    modules = nn.ModuleList([encoder, decoder])
    optimizer = torch.optim.Adam(modules.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)

    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    val_idx, train_idx = (order[:n_val], order[n_val:]) if n_val > 0 else (order, order)
    # Masks ride along as a 4th channel, so a random shift moves image and mask together.
    channels = [images] if masks is None else [images, (np.asarray(masks) != 0).astype(np.uint8)[..., None]]
    stacked = torch.as_tensor(np.concatenate(channels, axis=-1))  # stays on the CPU; batches move

    def pick(idx: np.ndarray, shift: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch = random_shift(stacked[torch.as_tensor(idx)].to(device), shift, generator)
        return batch[..., :3], (batch[..., 3] if masks is not None else None)

    @torch.no_grad()
    def evaluate(idx: np.ndarray) -> tuple[float, float, float]:
        modules.eval()
        sums, count = np.zeros(4), 0
        for start in range(0, len(idx), 256):
            batch = pick(idx[start : start + 256])
            values = _losses(encoder, decoder, *batch, mask_weight)
            sums += np.array([float(v) for v in values]) * len(batch[0])
            count += len(batch[0])
        modules.train()
        return tuple(float(v) for v in sums / count)

    def record(epoch: int, train_loss: float) -> dict[str, float]:
        val_loss, val_recon, val_mask, val_centroid = evaluate(val_idx)
        return {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_recon": val_recon,
            "val_mask": val_mask,
            "val_centroid": val_centroid,
        }

    history = [record(0, evaluate(train_idx)[0])]
    for epoch in range(1, epochs + 1):
        perm = train_idx[torch.randperm(len(train_idx), generator=generator).numpy()]
        total, count = 0.0, 0
        for start in range(0, len(perm), batch_size):
            batch_images, batch_masks = pick(perm[start : start + batch_size], max_shift)
            loss = _losses(encoder, decoder, batch_images, batch_masks, mask_weight)[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch_images)
            count += len(batch_images)
        history.append(record(epoch, total / count))
    if out_path is not None:
        encoder.cpu()
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(
            out_path, {"encoder": encoder.state_dict(), "architecture": encoder.architecture(), "history": history}
        )
    return history


def load_frozen_encoder(path: str | Path, device: str | torch.device = "cpu") -> ImageEncoder:
    """The pretrained encoder at `path`, in eval mode with every parameter frozen."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no encoder checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "encoder" not in state or "architecture" not in state:
        raise ValueError(f"{path} is not an encoder checkpoint (expected keys 'encoder' and 'architecture')")
    arch = state["architecture"]
    encoder = ImageEncoder(int(arch["feature_dim"]), tuple(arch["channels"]), tuple(arch["image_hw"]))
    encoder.load_state_dict(state["encoder"])
    return freeze(encoder.to(device))


def freeze(encoder: ImageEncoder) -> ImageEncoder:
    """Eval mode, no gradients: the encoder RL runs with (returned for chaining)."""
    encoder.eval()
    encoder.requires_grad_(False)
    return encoder


@torch.no_grad()
def encode_images(encoder: ImageEncoder, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """uint8 images (N, H, W, 3) -> features (N, F) float32, in batches on the encoder's device.
    Runs in eval mode whatever mode the encoder is in (and restores it)."""
    images = _check_images(images)
    if tuple(images.shape[1:3]) != tuple(encoder.image_hw):
        raise ValueError(
            f"images are {images.shape[1]}x{images.shape[2]}, the encoder takes "
            f"{encoder.image_hw[0]}x{encoder.image_hw[1]}"
        )
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    out = np.empty((images.shape[0], encoder.feature_dim), np.float32)
    for start in range(0, images.shape[0], batch_size):
        x = torch.as_tensor(images[start : start + batch_size], device=device).to(torch.float32) * IMAGE_SCALE
        out[start : start + batch_size] = encoder(x).cpu().numpy()
    encoder.train(was_training)
    return out


def encoder_hash(encoder: ImageEncoder) -> str:
    """sha256 over the architecture and every weight (name, dtype, shape, bytes): identifies which
    encoder produced cached `visual` features, so a replay buffer and an export can be matched."""
    h = hashlib.sha256(repr(sorted(encoder.architecture().items())).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        h.update(f"{name}|{array.dtype}|{array.shape}|".encode())
        h.update(array.tobytes())
    return h.hexdigest()
