"""PTP multistage training, stage 2: embed every frame of a dataset with a frozen encoder, cache it.

A long-context policy conditions on To (e.g. 16) frames; running the CNN on all of them for every
training sample dominates the cost. PTP instead trains a short-context policy with its encoder,
freezes that encoder, embeds each frame of the dataset once, and trains the long-context denoiser
on the cached features. The cache is one `.npz`:

- `episode_<pos>`: (T, F) float32 features of every frame of the dataset's episode at position
  `pos` (all episodes, in dataset order; frames in time order). A frame's features are exactly
  what the serving runtime's `encode()` computes for it: normalised joint positions + keypoints
  (image coordinates, [-1, 1]) per camera, `model.ObservationEncoder`.
- `dataset_hash`: `Dataset.content_hash()` of the embedded data.
- `encoder_hash`: sha256 of the encoder's weights and its input normalisation (`encoder_hash()`).

Frames are embedded without the training-time random shift: cached training sees no image
augmentation (the encoder is frozen, so augmentation could not train it anyway).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dexstack import contract
from dexstack.dataset import Dataset
from dexstack.files import fsync_dir
from dexstack.policies.diffusion.model import DiffusionPolicy, load_trained

EPISODE_KEY = "episode_{:06d}"


class EmbeddingCacheError(ValueError):
    """A cache that does not belong to the dataset or encoder it is used with, or is malformed."""


@dataclass
class EmbeddingCache:
    """Cached per-frame features: `episodes[pos]` (T, F) float32 for the dataset's episode at `pos`."""

    episodes: list[np.ndarray]
    dataset_hash: str
    encoder_hash: str
    feature_dim: int


def _as_policy(source: str | Path | DiffusionPolicy) -> DiffusionPolicy:
    if isinstance(source, DiffusionPolicy):
        return source
    if isinstance(source, (str, Path)):
        return load_trained(source)[0]  # EMA weights, the ones exported for serving
    raise TypeError(f"expected a run directory or a DiffusionPolicy, got {type(source).__name__}")


def encoder_hash(policy: DiffusionPolicy) -> str:
    """sha256 over the encoder's parameters and buffers (name, dtype, shape, bytes, sorted by name) and
    the joint-position normalisation: everything that decides a frame's features."""
    h = hashlib.sha256()
    tensors = dict(policy.encoder.state_dict())
    tensors.update(joint_mean=policy.joint_mean, joint_std=policy.joint_std)
    for name in sorted(tensors):
        array = tensors[name].detach().cpu().contiguous().numpy()
        h.update(f"{name}|{array.dtype}|{array.shape}|".encode())
        h.update(array.tobytes())
    return h.hexdigest()


@torch.no_grad()
def embed_frames(
    policy: DiffusionPolicy, joint_positions: np.ndarray, images: list[np.ndarray], batch_size: int = 256
) -> np.ndarray:
    """Raw joint positions (T, J) (rad / m) and uint8 images (T, H, W, 3), one array per camera in
    `config.cameras` order -> features (T, F) float32, in batches, eval mode, no gradients (the same
    per-frame path as training's `DiffusionPolicy.condition`)."""
    was_training = policy.training
    policy.eval()
    device = policy.joint_mean.device
    try:
        out = []
        for start in range(0, len(joint_positions), batch_size):
            q = torch.as_tensor(joint_positions[start : start + batch_size], dtype=torch.float32, device=device)
            imgs = [torch.as_tensor(img[start : start + batch_size], device=device) for img in images]
            # A window of one frame: condition() normalises and encodes each frame on its own.
            features = policy.condition(q[:, None], [img[:, None] for img in imgs])
            out.append(features.cpu().numpy().astype(np.float32))
        return np.concatenate(out) if out else np.zeros((0, policy.encoder.out_dim), np.float32)
    finally:
        policy.train(was_training)


def embed_dataset(
    run_dir_or_encoder: str | Path | DiffusionPolicy,
    dataset_root: str | Path,
    out_path: str | Path,
    batch_size: int = 256,
) -> Path:
    """Embed every frame of every episode of the dataset with the frozen encoder of a trained run
    (its EMA weights) or of a given `DiffusionPolicy`, and write the cache `.npz` atomically (temp
    file in the same directory, fsync, rename: an interrupted run leaves any old cache intact).
    Returns the path written."""
    out_path = Path(out_path)
    if out_path.suffix != ".npz":
        raise ValueError(f"cache path {out_path} must end in .npz")
    policy = _as_policy(run_dir_or_encoder)
    dataset = Dataset(dataset_root)
    cameras = list(policy.config.cameras)
    needed = [contract.JOINT_POSITIONS] + [contract.rgb_key(c) for c in cameras]
    missing = [k for k in needed if k not in dataset.features]
    if missing:
        raise ValueError(
            f"dataset {dataset.root} lacks features {missing} the encoder needs; it has {sorted(dataset.features)}"
        )
    if len(dataset.joint_names) != policy.encoder.n_joints:
        raise ValueError(f"dataset has {len(dataset.joint_names)} joints, the encoder takes {policy.encoder.n_joints}")
    arrays: dict[str, Any] = {
        "dataset_hash": np.array(dataset.content_hash()),
        "encoder_hash": np.array(encoder_hash(policy)),
    }
    for pos in range(len(dataset)):
        episode = dataset.episode(pos)
        arrays[EPISODE_KEY.format(pos)] = embed_frames(
            policy, episode[contract.JOINT_POSITIONS], [episode[contract.rgb_key(c)] for c in cameras], batch_size
        )

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, out_path)
        fsync_dir(out_path.parent)  # the rename itself survives a power cut
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return out_path


def load_embeddings(
    path: str | Path, dataset: Dataset | str | Path, encoder: str | Path | DiffusionPolicy | None = None
) -> EmbeddingCache:
    """Read a cache written by `embed_dataset` for `dataset` (a Dataset or its directory). Refuses
    (EmbeddingCacheError) a cache of other data, or, when `encoder` (an encoder hash string, run
    directory or DiffusionPolicy) is given, of another encoder, or with missing/misshapen episodes."""
    path = Path(path)
    if not isinstance(dataset, Dataset):
        dataset = Dataset(dataset)
    if not path.is_file():
        raise FileNotFoundError(f"no embedding cache at {path}; build it with embed_dataset")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    for key in ("dataset_hash", "encoder_hash"):
        if key not in arrays:
            raise EmbeddingCacheError(f"{path} is not an embedding cache: it has no {key}")
    cached_dataset, cached_encoder = str(arrays["dataset_hash"]), str(arrays["encoder_hash"])
    actual = dataset.content_hash()
    if cached_dataset != actual:
        raise EmbeddingCacheError(
            f"{path} was embedded from other data (dataset hash {cached_dataset[:12]}...), "
            f"not {dataset.root} (hash {actual[:12]}...); re-run embed_dataset"
        )
    if encoder is not None:
        expected = (
            encoder if isinstance(encoder, str) and not Path(encoder).is_dir() else encoder_hash(_as_policy(encoder))
        )
        if cached_encoder != expected:
            raise EmbeddingCacheError(
                f"{path} was embedded by another encoder (hash {cached_encoder[:12]}...), "
                f"not this one ({expected[:12]}...); re-run embed_dataset with it"
            )
    episodes = []
    for pos, entry in enumerate(dataset.meta["episodes"]):
        key = EPISODE_KEY.format(pos)
        if key not in arrays:
            raise EmbeddingCacheError(f"{path} lacks {key}")
        features = arrays[key]
        if features.ndim != 2 or len(features) != int(entry["length"]) or features.dtype != np.float32:
            raise EmbeddingCacheError(
                f"{path}: {key} is {features.dtype} {features.shape}, expected float32 ({entry['length']}, F)"
            )
        episodes.append(features)
    dims = {f.shape[1] for f in episodes}
    if len(dims) > 1:
        raise EmbeddingCacheError(f"{path}: episodes have different feature widths {sorted(dims)}")
    return EmbeddingCache(episodes, cached_dataset, cached_encoder, dims.pop() if dims else 0)
