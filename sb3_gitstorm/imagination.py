"""Imagined rollouts: the world model dreams, the actor acts, nothing touches the real environment.

From a batch of real context windows ``o_1 .. o_T`` with actions ``a_1 .. a_T`` (T =
``imagine_context_length``):

1. encode the whole window once;
2. run the sequence model over ``(z_1, a_1) .. (z_{T-1}, a_{T-1})`` into a key/value cache;
3. start from the real state ``s_0 = (z_T, h_{T-1})`` and, for ``H`` steps, pick ``a ~ pi(s)``,
   feed only the new ``(z, a)`` token through the cached transformer to get ``h``, predict reward
   and continuation from ``h`` and sample the next latent from the prior.

Every quantity respects episode boundaries inside the context window: if ``o_T`` starts an
episode, ``h_{T-1}`` is zero (as when acting in the real environment) and no imagined token
attends to the previous episode.
"""

from __future__ import annotations

import torch as th

from sb3_gitstorm.actor_critic import Actor, ImaginedTrajectory
from sb3_gitstorm.transformer import autocast_dtype, segment_positions
from sb3_gitstorm.world_model import WorldModel


@th.no_grad()
def imagine(
    world_model: WorldModel,
    actor: Actor | None,
    obs: th.Tensor,
    actions: th.Tensor,
    episode_starts: th.Tensor,
    horizon: int,
    use_kv_cache: bool = True,
    future_actions: th.Tensor | None = None,
) -> ImaginedTrajectory:
    """Roll the world model forward ``horizon`` steps from real context windows.

    Parameters
    ----------
    world_model : WorldModel
        Put it in eval mode first (no dropout, BatchNorm running statistics).
    actor : Actor or None
        Picks the imagined actions (sampled, not the mode); None when ``future_actions`` are given.
    obs : th.Tensor
        ``(B, T, *obs_shape)`` raw context observations.
    actions : th.Tensor
        ``(B, T)`` indices or ``(B, T, A)`` scaled actions taken at those observations (the last
        one is not used: the actor acts at ``s_0``).
    episode_starts : th.Tensor
        Bool ``(B, T)``.
    horizon : int
        Imagined steps ``H``.
    use_kv_cache : bool
        False recomputes the whole sequence at every step (the STORM code's behaviour), kept to
        measure what the cache saves.
    future_actions : th.Tensor, optional
        ``(B, H)`` indices or ``(B, H, A)`` actions in [-1, 1] to take instead of the actor's:
        open-loop prediction of a recorded episode, for evaluating the world model.

    Returns
    -------
    ImaginedTrajectory
    """
    batch, context = episode_starts.shape
    classes = world_model.sample_tokens(obs)  # (B, T, K)
    latents = world_model.tokens_to_latent(classes)
    segments, positions = segment_positions(episode_starts)
    transformer = world_model.transformer
    if use_kv_cache:  # stored in the dtype the key/value projections produce (bf16 under autocast)
        cache = transformer.new_cache(batch, context - 1 + horizon, latents.device, autocast_dtype(latents.device))
    else:
        cache = None

    inputs = world_model.sequence_input(latents[:, :-1], actions[:, :-1])
    input_classes, token_segments, token_positions = classes[:, :-1], segments[:, :-1], positions[:, :-1]
    hidden = th.zeros(batch, transformer.dim, device=latents.device)
    if context > 1:
        context_hidden = transformer(inputs, token_segments, token_positions, cache, input_classes)
        hidden = th.where(episode_starts[:, -1:], hidden, context_hidden[:, -1])

    # Imagined tokens belong to the start state's episode and continue its positions.
    step_segment, start_position = segments[:, -1:], positions[:, -1:]
    latent, tokens = latents[:, -1], classes[:, -1]
    features, raw_actions, hiddens, states, state_tokens = [], [], [], [], []
    for k in range(horizon):
        feature = th.cat([latent, hidden], -1)
        if future_actions is not None:
            raw = action = future_actions[:, k]
        else:
            raw = actor.act(feature, tokens=tokens)
            action = actor.squash(raw)
        token = world_model.sequence_input(latent, action)[:, None]
        position = start_position + k
        if cache is not None:
            hidden = transformer(token, step_segment, position, cache, tokens[:, None])[:, 0]
        else:
            inputs = th.cat([inputs, token], 1)
            input_classes = th.cat([input_classes, tokens[:, None]], 1)
            token_segments = th.cat([token_segments, step_segment], 1)
            token_positions = th.cat([token_positions, position], 1)
            hidden = transformer(inputs, token_segments, token_positions, tokens=input_classes)[:, -1]
        features.append(feature)
        raw_actions.append(raw)
        states.append(latent)
        state_tokens.append(tokens)
        hiddens.append(hidden)
        tokens = world_model.prior.sample(hidden)
        latent = world_model.tokens_to_latent(tokens)
    features.append(th.cat([latent, hidden], -1))
    states.append(latent)
    state_tokens.append(tokens)
    # Reward and continuation heads once over all steps: one large batch instead of H small ones.
    all_hidden = th.stack(hiddens, 1)
    return ImaginedTrajectory(
        features=th.stack(features, 1),
        actions=th.stack(raw_actions, 1),
        rewards=world_model.reward(all_hidden),
        continues=world_model.continuation(all_hidden),
        latents=th.stack(states, 1),
        tokens=th.stack(state_tokens, 1),
    )
