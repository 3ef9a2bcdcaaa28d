"""Small image encoders trained from scratch, and image augmentation.

Images enter as float tensors (B, H, W, 3) in channel-last layout, already scaled (`IMAGE_SCALE`) by the
manifest's normalisation, because that is how cameras deliver them (sensor_msgs/Image rgb8)
and the runtime then needs no transpose.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGE_SCALE = 1.0 / 255.0  # uint8 -> [0, 1]; GroupNorm takes care of centring


class SpatialSoftmax(nn.Module):
    """Heat maps (B, K, H, W) -> expected image coordinates (B, 2K), each in [-1, 1].

    x grows to the right, y downwards (image frame); (-1, -1) is the top-left pixel centre.
    """

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij")
        self.register_buffer("coords", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1), persistent=False)

    def forward(self, heat: torch.Tensor) -> torch.Tensor:
        b, k, h, w = heat.shape
        attention = torch.softmax(heat.reshape(b, k, h * w), dim=-1)
        keypoints = attention @ self.coords  # (B, K, 2)
        return keypoints.reshape(b, 2 * k)


class ConvKeypointEncoder(nn.Module):
    """Conv + GroupNorm stack ending in spatial-softmax keypoints (the idea of diffusion_policy's
    ResNet with GroupNorm and spatial softmax, at a fraction of the size).

    The first two convolutions have stride 2, so a 96x96 image gives 24x24 keypoint heat maps.
    `pooled_features` > 0 adds that many globally averaged channels (a 1x1 convolution of the last
    feature map, averaged over the image) after the keypoints: a summary of what is in view (such
    as colour) next to where things are. (`cue_choice`'s colour cue turned out to be decodable from
    the keypoints alone; see docs/RESULTS.md.)
    """

    def __init__(
        self,
        height: int,
        width: int,
        channels: tuple[int, ...] = (32, 32, 64),
        num_keypoints: int = 32,
        groups: int = 8,
        pooled_features: int = 0,
    ) -> None:
        super().__init__()
        self.image_hw = (height, width)
        layers: list[nn.Module] = []
        in_ch = 3
        size_h, size_w = height, width
        for i, out_ch in enumerate(channels):
            stride = 2 if i < 2 else 1
            kernel = 5 if i == 0 else 3
            layers += [
                nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2),
                nn.GroupNorm(min(groups, out_ch), out_ch),
                nn.ReLU(inplace=True),
            ]
            if stride == 2:
                size_h, size_w = (size_h + 1) // 2, (size_w + 1) // 2
            in_ch = out_ch
        layers.append(nn.Conv2d(in_ch, num_keypoints, 1))
        self.trunk = nn.Sequential(*layers)
        self.keypoints = SpatialSoftmax(size_h, size_w)
        self.pooled = nn.Conv2d(in_ch, pooled_features, 1) if pooled_features > 0 else None
        self.out_dim = 2 * num_keypoints + pooled_features

    def forward(self, image_nhwc: torch.Tensor) -> torch.Tensor:
        if self.pooled is None:
            return self.keypoints(self.trunk(image_nhwc.permute(0, 3, 1, 2)))
        body = self.trunk[:-1](image_nhwc.permute(0, 3, 1, 2))  # trunk[-1]: the keypoint heat-map conv
        return torch.cat([self.keypoints(self.trunk[-1](body)), self.pooled(body).mean(dim=(2, 3))], dim=1)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image (B, H, W, C), any dtype, by up to `max_shift` pixels in x and y.

    Equivalent to edge-padding by `max_shift` and cropping a random window (DrQ), done with one
    gather so uint8 images stay uint8 and nothing is allocated per sample.
    """
    if max_shift <= 0:
        return images
    b, h, w, _ = images.shape
    device = images.device
    offsets = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator).to(device)
    rows = (torch.arange(h, device=device)[None, :] + offsets[:, :1]).clamp_(0, h - 1)  # (B, H)
    cols = (torch.arange(w, device=device)[None, :] + offsets[:, 1:]).clamp_(0, w - 1)  # (B, W)
    batch = torch.arange(b, device=device)[:, None, None]
    return images[batch, rows[:, :, None], cols[:, None, :]]
