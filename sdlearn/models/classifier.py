"""A small convolutional classifier for 28x28 grey images (digits, Fashion-MNIST).

Lesson 01 trains one on the digits plus a "not a digit" class and uses it as the magic
function whose gradient turns noise into digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


_ACTIVATIONS = {"relu": F.relu, "silu": F.silu}
_POOLS = {"max": F.max_pool2d, "avg": F.avg_pool2d}


@dataclass
class ClassifierConfig:
    in_channels: int = 1        # 1 for grey images
    image_size: int = 28        # height = width of the input; must be divisible by 4
    n_classes: int = 10         # number of output logits
    channels: int = 16          # channels of the first convolution; the second has twice as many
    hidden: int = 64            # width of the fully connected layer before the logits
    activation: str = "relu"    # "relu", or "silu" for a network that is smooth everywhere
    pool: str = "max"           # "max", or "avg" (smooth, as finite-difference checks prefer)


class SmallClassifier(nn.Module):
    """Two conv-activation-pool stages, then two linear layers: about 106k parameters at 28x28."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        if config.image_size % 4 != 0:
            raise ValueError(f"image_size must be divisible by 4 (two 2x poolings), got {config.image_size}")
        self.config = config
        if config.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {config.activation!r}")
        if config.pool not in _POOLS:
            raise ValueError(f"pool must be one of {sorted(_POOLS)}, got {config.pool!r}")
        self.act = _ACTIVATIONS[config.activation]
        self.pool = _POOLS[config.pool]
        c = config.channels
        self.conv1 = nn.Conv2d(config.in_channels, c, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(c, 2 * c, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(2 * c * (config.image_size // 4) ** 2, config.hidden)
        self.fc2 = nn.Linear(config.hidden, config.n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The activations before the last layer, (N, hidden): what `sdlearn.metrics` compares."""
        expected = (self.config.in_channels, self.config.image_size, self.config.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"SmallClassifier expects a batch (N, {', '.join(map(str, expected))}), "
                             f"got {tuple(x.shape)}")
        h = self.pool(self.act(self.conv1(x)), 2)     # (N, c, H/2, W/2)
        h = self.pool(self.act(self.conv2(h)), 2)     # (N, 2c, H/4, W/4)
        h = h.flatten(1)                              # (N, 2c * H/4 * W/4)
        return self.act(self.fc1(h))                  # (N, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))             # (N, n_classes) logits




@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    """The fraction of images whose highest logit is their label."""
    model.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        logits = model(images[start:start + batch_size])
        correct += (logits.argmax(-1) == labels[start:start + batch_size]).sum().item()
    return correct / images.shape[0]
