"""What the world model dreams: real frames next to its open-loop imagination of them.

GITSTORM writes these to TensorBoard every ``log_video_interval`` updates (image observations only):
the world model sees the first ``imagine_context_length`` steps of a replay window, then imagines
the rest of it with the actions that were really taken (:meth:`~sb3_gitstorm.world_model.WorldModel.dream`), and
its latents are decoded into frames. Where the dream and the real frames part ways is what the
world model has not learned yet.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch as th
from stable_baselines3.common.logger import Image, Logger, TensorBoardOutputFormat, Video

from sb3_gitstorm.buffers import SequenceReplayBuffer, SequenceSamples
from sb3_gitstorm.world_model import WorldModel

__all__ = [
    "DREAM_FPS",
    "DREAM_WINDOWS",
    "filmstrip",
    "log_dreams",
    "open_loop_dream",
    "rgb",
    "side_by_side",
    "tensorboard_video_supported",
]

DREAM_WINDOWS = 4  # replay windows shown in each imagination video
DREAM_FPS = 10


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
    context = world_model.sample_tokens(obs[:, :context_length])
    start = world_model.observe(context, actions[:, : context_length - 1], starts[:, :context_length], horizon)
    trajectory = world_model.dream(start, horizon, actions[:, context_length - 1 : -1])
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


def log_dreams(
    logger: Logger, world_model: WorldModel, replay_buffer: SequenceReplayBuffer, context_length: int, horizon: int
) -> None:
    """Write real frames next to the world model's open-loop dream of them to TensorBoard.

    ``imagination/filmstrip`` (one image) and ``imagination/video`` (needs ``moviepy<2``) of
    :data:`DREAM_WINDOWS` replay windows of ``context_length + horizon`` steps. Skipped without image
    observations (nothing to show) or without a TensorBoard logger.
    """
    length = context_length + horizon
    writes_tensorboard = any(isinstance(f, TensorBoardOutputFormat) for f in logger.output_formats)
    if not (world_model.is_image and writes_tensorboard and replay_buffer.can_sample(length)):
        return
    device = next(world_model.parameters()).device
    # Own random streams: logging must not change what is learned.
    numpy_state = np.random.get_state()
    try:
        with th.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            world_model.eval()
            windows = replay_buffer.sample(DREAM_WINDOWS, length)
            real, dreamed = open_loop_dream(world_model, windows, context_length)
    finally:
        np.random.set_state(numpy_state)
    text_formats = ("stdout", "log", "json", "csv")
    logger.record("imagination/filmstrip", Image(filmstrip(real, dreamed).cpu(), "CHW"), exclude=text_formats)
    if tensorboard_video_supported():
        logger.record("imagination/video", Video(side_by_side(real, dreamed).cpu(), DREAM_FPS), exclude=text_formats)
    else:  # shown once: Python's default warning filter
        warnings.warn(
            "TensorBoard videos need moviepy<2 (torch's add_video imports moviepy.editor); wrote the filmstrip only",
            stacklevel=3,
        )
