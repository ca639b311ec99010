"""Transformer blocks, the causal sequence model and its key/value cache.

The sequence model sees windows of ``(z_t, a_t)`` tokens. A window may contain several
episodes; tokens only attend to earlier tokens *of the same episode* (segment), and positions
count from the start of the window or of the episode, whichever is later. Training windows,
the imagination context and the acting context all follow this one rule, so the transformer
never sees across an episode boundary.

In imagination the :class:`KVCache` keeps every layer's keys and values: each new step
projects only its own token (the STORM code re-projects the whole history every step).
"""

from __future__ import annotations

import torch as th
import torch.nn.functional as F
from torch import nn

from sb3_gitstorm.networks import OneHotLinear


def autocast_dtype(device: th.device) -> th.dtype:
    """The dtype that matrix products produce on ``device``: the autocast dtype inside ``torch.autocast``, else float32."""
    try:
        if th.is_autocast_enabled(device.type):
            return th.get_autocast_dtype(device.type)
    except (AttributeError, TypeError):  # torch < 2.4 lacks the device-type variants
        pass
    return th.float32


class KVCache:
    """Keys, values and segment ids of the tokens seen so far, for every layer.

    Parameters
    ----------
    batch_size, num_layers, num_heads, head_dim, capacity : int
        Shape of the cache; ``capacity`` is the most tokens it holds.
    device, dtype
        Where and how the keys and values are stored.
    """

    def __init__(
        self,
        batch_size: int,
        num_layers: int,
        num_heads: int,
        head_dim: int,
        capacity: int,
        device: th.device,
        dtype: th.dtype = th.float32,
    ) -> None:
        shape = (batch_size, num_heads, capacity, head_dim)
        # Uninitialised: only the first ``length`` positions are ever read, and they are written first.
        self.keys = [th.empty(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.values = [th.empty(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.segments = th.zeros(batch_size, capacity, device=device, dtype=th.long)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def store(self, layer: int, keys: th.Tensor, values: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Write the new tokens' keys/values ``(B, H, T, D)`` and return all of them so far."""
        start, end = self.length, self.length + keys.shape[2]
        if keys.requires_grad:
            # A differentiable rollout: earlier steps saved the cache for their backward pass, so it is
            # rewritten out of place (one copy per step) instead of overwritten.
            self.keys[layer] = self.keys[layer].slice_scatter(keys, 2, start, end)
            self.values[layer] = self.values[layer].slice_scatter(values, 2, start, end)
        else:
            self.keys[layer][:, :, start:end] = keys
            self.values[layer][:, :, start:end] = values
        if start == 0:  # nothing earlier: attend to the new tokens themselves
            return keys, values
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class SelfAttention(nn.Module):
    """Multi-head self-attention on ``F.scaled_dot_product_attention`` with an optional cache."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: th.Tensor, mask: th.Tensor | None, cache: KVCache | None = None, layer: int = 0) -> th.Tensor:
        """``x``: ``(B, T, dim)``; ``mask``: bool ``(B, 1, T, T_keys)`` (True = attend) or None."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.store(layer, k, v)
        if t == 1 and not self.training:
            # One query per sequence (imagination, acting): a batched matrix-vector product is
            # several times faster than the fused kernels' launch overhead on CPU, and as fast on GPU.
            scores = (q @ k.transpose(-1, -2)) * (d // self.heads) ** -0.5
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            out = scores.softmax(-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN(x))`` then ``x + FFN(LN(x))``."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: th.Tensor, mask: th.Tensor | None = None, cache: KVCache | None = None, layer: int = 0) -> th.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask, cache, layer))
        return x + self.ffn(self.norm2(x))


def segment_positions(episode_starts: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """Segment ids and in-segment positions of a window of steps.

    Parameters
    ----------
    episode_starts : th.Tensor
        Bool ``(B, T)``: step ``t`` is the first step of an episode.

    Returns
    -------
    tuple of th.Tensor
        ``segments`` (long ``(B, T)``, increases at every episode start) and ``positions``
        (long ``(B, T)``, steps since the later of the window start and the episode start).
    """
    starts = episode_starts.long()
    segments = starts.cumsum(1)
    index = th.arange(starts.shape[1], device=starts.device).expand_as(starts)
    last_start = th.cummax(index * starts, dim=1).values
    return segments, index - last_start


class CausalTransformer(nn.Module):
    """STORM's sequence model: ``h_t = f(z_{<=t}, a_{<=t})`` over a window of steps.

    Parameters
    ----------
    input_dim : int
        Size of ``concat(z_t, a_t)``.
    dim, layers, heads, ffn_dim, dropout, max_length
        Width, depth, heads, feed-forward width, dropout and the longest window (learned positions).
    latent_shape : tuple of int, optional
        ``(K, C)`` when the inputs start with ``K`` one-hot blocks of ``C`` classes: the first layer is
        then a :class:`~sb3_gitstorm.networks.OneHotLinear`.
    """

    def __init__(
        self,
        input_dim: int,
        dim: int,
        layers: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        max_length: int,
        latent_shape: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.dim, self.heads, self.max_length = dim, heads, max_length
        self.stem = nn.Sequential(
            nn.Linear(input_dim, dim, bias=False)
            if latent_shape is None
            else OneHotLinear(input_dim, dim, latent_shape, bias=False),
            nn.LayerNorm(dim),
            nn.ReLU(),
            nn.Linear(dim, dim, bias=False),
            nn.LayerNorm(dim),
        )
        self.position = nn.Embedding(max_length, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, ffn_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def new_cache(
        self,
        batch_size: int,
        capacity: int,
        device: th.device,
        dtype: th.dtype = th.float32,
    ) -> KVCache:
        """An empty :class:`KVCache` for ``batch_size`` sequences of up to ``capacity`` tokens."""
        return KVCache(batch_size, len(self.blocks), self.heads, self.dim // self.heads, capacity, device, dtype)

    def forward(
        self,
        inputs: th.Tensor,
        segments: th.Tensor,
        positions: th.Tensor,
        cache: KVCache | None = None,
    ) -> th.Tensor:
        """Run new tokens through the transformer, attending to the cache if one is given.

        Parameters
        ----------
        inputs : th.Tensor
            ``(B, T, input_dim)``: ``concat(z_t, a_t)`` of the new tokens.
        segments, positions : th.Tensor
            Long ``(B, T)`` from :func:`segment_positions`: a token attends to earlier tokens
            (in the cache or among the new ones) with the same segment id.
        cache : KVCache, optional
            Cached keys/values of earlier tokens; the new tokens are appended to it.

        Returns
        -------
        th.Tensor
            ``h``, shape ``(B, T, dim)``.
        """
        t = inputs.shape[1]
        past = 0 if cache is None else cache.length
        key_segments = segments
        if cache is not None:
            if past + t > cache.capacity:
                raise ValueError(f"KV cache of capacity {cache.capacity} cannot take {t} more tokens after {past}")
            cache.segments[:, past : past + t] = segments
            key_segments = cache.segments[:, : past + t]
        query_index = th.arange(past, past + t, device=inputs.device)
        key_index = th.arange(past + t, device=inputs.device)
        causal = key_index[None, :] <= query_index[:, None]
        mask = (causal & (segments[:, :, None] == key_segments[:, None, :])).unsqueeze(1)

        x = self.drop(self.stem(inputs) + self.position(positions))
        for layer, block in enumerate(self.blocks):
            x = block(x, mask, cache, layer)
        if cache is not None:
            cache.length = past + t
        return self.norm(x)
