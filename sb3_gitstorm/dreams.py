"""What the world model dreams: real frames next to its open-loop imagination of them.

GITSTORM writes these to TensorBoard every ``log_video_interval`` updates (image observations only):
the world model sees the first ``imagine_context_length`` steps of a replay window, then imagines
the rest of it with the actions that were really taken (``imagine(..., future_actions=...)``), and
its latents are decoded into frames. Where the dream and the real frames part ways is what the
world model has not learned yet.
"""

from __future__ import annotations

import functools

import torch as th

from sb3_gitstorm.buffers import SequenceSamples
from sb3_gitstorm.imagination import imagine
from sb3_gitstorm.world_model import WorldModel


@th.no_grad()
def open_loop_dream(
    world_model: WorldModel,
    windows: SequenceSamples,
    context_length: int,
) -> tuple[th.Tensor, th.Tensor]:
    """Real frames of replay windows and the world model's open-loop prediction of them.

    Parameters
    ----------
    world_model : WorldModel
        An image world model, in eval mode.
    windows : SequenceSamples
        ``B`` replay windows of ``L = context_length + H`` steps.
    context_length : int
        Real steps the world model sees before it dreams.

    Returns
    -------
    tuple of th.Tensor
        ``real`` and ``dreamed``, each ``(B, H + 1, C, S, S)`` in [0, 1]: the last context frame and
        the ``H`` frames after it, real and imagined (the first dreamed frame is the reconstruction
        of the last context frame). A window may run into a new episode; the dream does not.
    """
    obs, actions, starts = windows.observations, windows.actions, windows.episode_starts
    horizon = obs.shape[1] - context_length
    trajectory = imagine(
        world_model,
        None,
        obs[:, :context_length],
        actions[:, :context_length],
        starts[:, :context_length],
        horizon,
        future_actions=actions[:, context_length - 1 : -1],
    )
    dreamed = world_model.decode(trajectory.latents).clamp(0.0, 1.0)
    real = obs[:, context_length - 1 :].float() / 255.0
    return real, dreamed


def rgb(frames: th.Tensor) -> th.Tensor:
    """Frames ``(..., C, H, W)`` as RGB ``(..., 3, H, W)``: stacked RGB frames keep the newest (last
    three channels), anything else shows its last channel in grey."""
    if frames.shape[-3] % 3 == 0:
        return frames[..., -3:, :, :]
    return frames[..., -1:, :, :].expand(*frames.shape[:-3], 3, *frames.shape[-2:])


def side_by_side(real: th.Tensor, dreamed: th.Tensor) -> th.Tensor:
    """Video frames ``(B, T, 3, S, 2S)``: real on the left, dreamed on the right."""
    return th.cat([rgb(real), rgb(dreamed)], -1)


def filmstrip(real: th.Tensor, dreamed: th.Tensor) -> th.Tensor:
    """One image ``(3, 2S, T*S)`` of the first window: real frames on top, dreamed below, time to the right."""
    rows = [rgb(x[0]).permute(1, 2, 0, 3).flatten(2) for x in (real, dreamed)]  # (3, S, T*S) each
    return th.cat(rows, 1)


@functools.cache
def tensorboard_video_supported() -> bool:
    """Whether torch's ``SummaryWriter.add_video`` can encode a GIF here.

    It imports ``moviepy.editor``, which moviepy 2 removed (pytorch/pytorch#147317): videos need
    ``moviepy<2``; without it ``add_video`` writes an empty entry.
    """
    try:
        import moviepy.editor  # noqa: F401
    except ImportError:
        return False
    return True
