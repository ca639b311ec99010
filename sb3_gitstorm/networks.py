"""Building blocks: MLPs and the image / vector encoders and decoders of the world model."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial

import torch as th
import torch.nn.functional as F
from torch import nn

# Classes per latent token from which the one-hot first layer (:class:`OneHotLinear`) pays off on CPU.
ONEHOT_MIN_CLASSES = 16


class OneHotLinear(nn.Linear):
    """A Linear layer whose input starts with ``K`` one-hot blocks of ``C`` classes (the latent ``z``).

    The one-hot block contributes the sum of ``K`` of the weight columns: when no gradient has to
    reach the input (imagination, acting, the actor-critic update on detached features), that is
    an ``embedding_bag`` over ``K`` rows instead of a ``K*C``-wide matrix product (32 x 32 latents:
    about 4x less work forward and 2x with gradients), the same function and weight gradients up to
    float rounding. With an input gradient (the straight-through latents of the world-model loss),
    or below :data:`ONEHOT_MIN_CLASSES` classes (where the dense product is faster), it is
    ``nn.Linear``.

    Parameters
    ----------
    in_features, out_features : int
        As ``nn.Linear``; ``in_features = K*C + R``.
    latent_shape : tuple of int
        ``(K, C)``.
    bias : bool
        As ``nn.Linear``.
    """

    def __init__(self, in_features: int, out_features: int, latent_shape: tuple[int, int], bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.latent_shape = latent_shape

    def forward(self, x: th.Tensor) -> th.Tensor:
        """``(..., K*C + R)`` to ``(..., out_features)``."""
        k, c = self.latent_shape
        if x.requires_grad or c < ONEHOT_MIN_CLASSES:
            return super().forward(x)
        split = k * c
        tokens = x[..., :split].unflatten(-1, (k, c)).argmax(-1)
        out = F.linear(x[..., split:], self.weight[:, split:], self.bias)
        index = (tokens + th.arange(0, split, c, device=tokens.device)).reshape(-1, k)
        picked = F.embedding_bag(index, self.weight[:, :split].t().contiguous(), mode="sum")
        return out + picked.view(out.shape)


def mlp(in_dim: int, out_dim: int, hidden: int, layers: int, latent_shape: tuple[int, int] | None = None) -> nn.Sequential:
    """``layers`` x (Linear, LayerNorm, ReLU) followed by a Linear output layer.

    Parameters
    ----------
    in_dim, out_dim : int
        Input and output features.
    hidden : int
        Width of the hidden layers.
    layers : int
        Number of hidden layers (0 gives a single Linear map).
    latent_shape : tuple of int, optional
        ``(K, C)`` when the input starts with ``K`` one-hot blocks of ``C`` classes: the first layer
        is then a :class:`OneHotLinear`.
    """
    modules: list[nn.Module] = []
    dim = in_dim
    linear: Callable[..., nn.Linear] = nn.Linear if latent_shape is None else partial(OneHotLinear, latent_shape=latent_shape)
    for _ in range(layers):
        modules += [linear(dim, hidden, bias=False), nn.LayerNorm(hidden), nn.ReLU()]
        dim, linear = hidden, nn.Linear
    modules.append(linear(dim, out_dim))
    return nn.Sequential(*modules)


def scale_output_init(net: nn.Sequential, scale: float) -> nn.Sequential:
    """Scale the last Linear layer's initial weights by ``scale`` and zero its bias: 0 makes a head start
    by predicting a uniform distribution / zero, a small scale a near-uniform one (DreamerV3's ``outscale``)."""
    last = net[-1]
    assert isinstance(last, nn.Linear)
    with th.no_grad():
        last.weight.mul_(scale)
    if last.bias is not None:
        nn.init.zeros_(last.bias)
    return net


class ImageEncoder(nn.Module):
    """STORM's CNN encoder: stride-2 4x4 convolutions with BatchNorm and ReLU, then flatten.

    Parameters
    ----------
    in_channels : int
        Channels of the input image.
    channels : tuple of int
        Output channels of each convolution (paper: 32-64-128-256; ``ModelConfig.conv_channels``).
    image_size : int
        Side of the square input (paper: 64); the final map is ``image_size / 2**len(channels)`` (4).

    Input ``(N, in_channels, image_size, image_size)`` float in [0, 1];
    output ``(N, out_dim)`` with ``out_dim = channels[-1] * final_side**2``.
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], image_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU()]
            prev = ch
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.final_side = image_size // 2 ** len(channels)
        self.out_dim = channels[-1] * self.final_side**2

    def forward(self, images: th.Tensor) -> th.Tensor:
        # channels-last convolutions are markedly faster with oneDNN (CPU) and cuDNN (GPU).
        return self.net(images.contiguous(memory_format=th.channels_last))


class ImageDecoder(nn.Module):
    """Mirror of :class:`ImageEncoder`: Linear to the final map, then stride-2 transposed convolutions.

    Input ``(N, latent_dim)``; output ``(N, out_channels, image_size, image_size)``, unbounded
    (trained with MSE against images scaled to [0, 1]).
    """

    def __init__(self, latent_dim: int, channels: tuple[int, ...], out_channels: int, image_size: int) -> None:
        super().__init__()
        side = image_size // 2 ** len(channels)
        rev = list(reversed(channels))
        self.project = nn.Sequential(
            nn.Linear(latent_dim, rev[0] * side * side, bias=False), nn.Unflatten(1, (rev[0], side, side))
        )
        layers: list[nn.Module] = [nn.BatchNorm2d(rev[0]), nn.ReLU()]
        for prev, ch in itertools.pairwise(rev):
            layers += [nn.ConvTranspose2d(prev, ch, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU()]
        layers.append(nn.ConvTranspose2d(rev[-1], out_channels, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, latent: th.Tensor) -> th.Tensor:
        return self.net(self.project(latent).contiguous(memory_format=th.channels_last))
