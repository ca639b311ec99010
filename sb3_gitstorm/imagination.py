"""Imagined rollouts: the world model dreams, the actor acts, nothing touches the real environment.

From a batch of real context windows ``o_1 .. o_T`` with actions ``a_1 .. a_T`` (T =
``imagine_context_length``):

1. encode the whole window once;
2. run the sequence model over ``(z_1, a_1) .. (z_{T-1}, a_{T-1})`` into a key/value cache
   (:meth:`~sb3_gitstorm.world_model.WorldModel.observe`);
3. start from the real state ``s_0 = (z_T, h_{T-1})`` and, for ``H`` steps, pick ``a ~ pi(s)``,
   feed only the new ``(z, a)`` token through the cached transformer to get ``h``, and sample the
   next latent from the prior (:meth:`~sb3_gitstorm.world_model.WorldModel.dream`); reward and
   continuation are predicted from every ``h`` at the end.

Every quantity respects episode boundaries inside the context window: if ``o_T`` starts an
episode, ``h_{T-1}`` is zero (as when acting in the real environment) and no imagined token
attends to the previous episode.
"""

from __future__ import annotations

import warnings

import torch as th

from sb3_gitstorm.actor_critic import Actor
from sb3_gitstorm.config import ModelConfig
from sb3_gitstorm.world_model import ImaginedTrajectory, ModelState, WorldModel


@th.no_grad()
def imagine(
    world_model: WorldModel,
    actor: Actor,
    obs: th.Tensor,
    actions: th.Tensor,
    episode_starts: th.Tensor,
    horizon: int,
) -> ImaginedTrajectory:
    """Roll the world model and the actor forward ``horizon`` steps from real context windows.

    Parameters
    ----------
    world_model : WorldModel
        Put it in eval mode first (no dropout, BatchNorm running statistics).
    actor : Actor
        Picks the imagined actions (sampled, not the mode).
    obs : th.Tensor
        ``(B, T, *obs_shape)`` raw context observations.
    actions : th.Tensor
        ``(B, T)`` indices or ``(B, T, A)`` scaled actions taken at those observations (the last
        one is not used: the actor acts at ``s_0``).
    episode_starts : th.Tensor
        Bool ``(B, T)``.
    horizon : int
        Imagined steps ``H``.

    Returns
    -------
    ImaginedTrajectory
    """

    def act(state: ModelState) -> tuple[th.Tensor, th.Tensor]:
        raw = actor.act(state.features)
        return raw, actor.squash(raw)

    start = world_model.observe(world_model.sample_tokens(obs), actions[:, :-1], episode_starts, horizon)
    return world_model.dream(start, horizon, act)


def check_imagination_lengths(config: ModelConfig, context_length: int, horizon: int, batch_length: int) -> None:
    """Raise a ValueError if imagination does not fit the transformer, and warn if it reaches sequence
    positions that world-model windows of ``batch_length`` steps never train."""
    if context_length < 1:
        raise ValueError(f"imagine_context_length must be >= 1, got {context_length}")
    config.check_sequence_length("imagine_context_length - 1 + imagine_horizon", context_length - 1 + horizon)
    if context_length - 1 + horizon > batch_length:
        warnings.warn(
            f"imagination reaches sequence position {context_length - 2 + horizon}, but world-model windows of "
            f"batch_length={batch_length} only train positions up to {batch_length - 1}: "
            "lengthen batch_length or shorten imagine_context_length / imagine_horizon",
            stacklevel=4,
        )
