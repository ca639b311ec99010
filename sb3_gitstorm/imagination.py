"""Imagined rollouts: the world model dreams, the actor acts, nothing touches the real environment.

Where the rollouts start (``imagine_starts``):

- ``"replay"`` (STORM, the paper): fresh context windows sampled from the replay buffer (:func:`imagine`);
- ``"batch"`` (DreamerV3-style): states inside the world-model update's own windows, from the tokens it
  has just sampled (:func:`imagine_from_batch`): no frame is encoded twice and no second batch is
  gathered from the replay buffer. Each start sees the same context as a replay start and as acting:
  its own ``imagine_context_length - 1`` earlier steps, run through the sequence model on their own
  (positions counted from the first of them), so a batch start's ``h`` is the one a replay start or
  the acting policy computes from the same tokens and actions.

From a batch of real context windows ``o_1 .. o_T`` with actions ``a_1 .. a_T`` (T =
``imagine_context_length``):

1. encode the whole window once;
2. run the sequence model over ``(z_1, a_1) .. (z_{T-1}, a_{T-1})`` into a key/value cache
   (:meth:`~sb3_gitstorm.world_model.WorldModel.observe`);
3. start from the real state ``s_0 = (z_T, h_{T-1})`` and, for ``H`` steps, pick ``a ~ pi(s)``,
   feed only the new ``(z, a)`` token through the cached transformer to get ``h``, and sample the
   next latent from the prior (:meth:`~sb3_gitstorm.world_model.WorldModel.dream`); reward and
   continuation are predicted from every ``h`` at the end.

With ``differentiable=True`` (dynamics backpropagation, ``actor_gradient="dynamics"``) the dream keeps
the graph from each Box action, sampled with the reparameterisation trick, through ``h`` and the
cached keys and values to the later rewards, continuations and states; the world model's weights are
frozen meanwhile, so only the actor and the features receive gradients. Each imagined latent ``z_{t+1}``
is the discrete sample plus DreamerV2's straight-through term ``p - sg(p)`` of the prior probabilities it
was drawn from, so the gradient also reaches ``h_t`` (and the actions before it) through ``z_{t+1}``; with a
chunked MaskGIT schedule ``p`` is each token's last decoding pass
(:meth:`~sb3_gitstorm.priors.MaskGITPrior.draw`).

Every quantity respects episode boundaries inside the context window: if ``o_T`` starts an
episode, ``h_{T-1}`` is zero (as when acting in the real environment) and no imagined token
attends to the previous episode.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch as th

from sb3_gitstorm.actor_critic import Actor
from sb3_gitstorm.config import ModelConfig
from sb3_gitstorm.world_model import DreamPolicy, ImaginedTrajectory, ModelState, WorldModel


def imagine(
    world_model: WorldModel,
    actor: Actor,
    obs: th.Tensor,
    actions: th.Tensor,
    episode_starts: th.Tensor,
    horizon: int,
    differentiable: bool = False,
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
    differentiable : bool
        Keep the rollout's graph from the actions on (dynamics backpropagation; Box actions only).

    Returns
    -------
    ImaginedTrajectory
    """
    with th.no_grad():
        start = world_model.observe(world_model.sample_tokens(obs), actions[:, :-1], episode_starts, horizon)
    return _dream(world_model, actor, start, horizon, differentiable)


def imagine_from_batch(
    world_model: WorldModel,
    actor: Actor,
    tokens: th.Tensor,
    actions: th.Tensor,
    episode_starts: th.Tensor,
    horizon: int,
    num_starts: int,
    context_length: int,
    differentiable: bool = False,
) -> ImaginedTrajectory:
    """Roll the world model and the actor forward from states inside the world-model batch's windows.

    Each window gets ``ceil(num_starts / W)`` start steps ``t >= context_length - 1`` (:func:`sample_starts`).
    A start's context is the ``context_length`` steps of its window that end at ``t``, observed as
    :func:`imagine` observes a replay window of the same steps: the same ``h`` as a replay start or the
    acting policy, only without encoding the observations again.

    What still differs from replay starts: the tokens are the posterior sample of the world-model
    update's forward pass (the encoder in train mode, before the update) where a replay start encodes
    afresh with the updated encoder in eval mode; and when ``W * (L - context_length + 1)`` steps are
    fewer than the starts wanted, some steps start several rollouts (each its own actor and prior samples).

    Parameters
    ----------
    world_model : WorldModel
        In eval mode.
    actor : Actor
        Picks the imagined actions.
    tokens : th.Tensor
        Long ``(W, L, K)``: the posterior sample of the world-model update (``WorldModelLoss.tokens``).
    actions, episode_starts : th.Tensor
        The update's windows: ``(W, L)`` or ``(W, L, A)`` actions, bool ``(W, L)`` episode starts.
    horizon : int
        Imagined steps ``H``.
    num_starts : int
        Rollouts wanted; ``W * ceil(num_starts / W)`` are made.
    context_length : int
        Real steps of a start's context, the start included (``imagine_context_length``).
    differentiable : bool
        As in :func:`imagine`.

    Returns
    -------
    ImaginedTrajectory
        Rollout ``w * S + s`` starts at window ``w``'s ``s``-th start.
    """
    windows, length = episode_starts.shape
    with th.no_grad():
        starts = sample_starts(windows, length, -(-num_starts // windows), context_length, tokens.device)
        context = [context_windows(x, starts, context_length) for x in (tokens, actions, episode_starts)]
        start = world_model.observe(context[0], context[1][:, :-1], context[2], horizon)
    return _dream(world_model, actor, start, horizon, differentiable)


def sample_starts(windows: int, length: int, per_window: int, context_length: int, device: th.device) -> th.Tensor:
    """Start steps ``(windows, per_window)`` in ``[context_length - 1, length - 1]`` (a full context before each):
    a random order of that range per window, repeated when more starts than steps are wanted (no step twice
    before all once)."""
    choices = length - context_length + 1
    if choices < 1:
        raise ValueError(f"windows of {length} steps hold no start with a context of {context_length} steps")
    order = th.rand(windows, choices, device=device).argsort(1).repeat(1, -(-per_window // choices))
    return order[:, :per_window] + context_length - 1


def context_windows(x: th.Tensor, starts: th.Tensor, context_length: int) -> th.Tensor:
    """The ``context_length`` steps ending at each start: ``(W, L, ...)`` and starts ``(W, S)`` to ``(W * S, T, ...)``."""
    steps = (starts[..., None] + th.arange(1 - context_length, 1, device=starts.device)).flatten(1)  # (W, S * T)
    index = steps.view(*steps.shape, *([1] * (x.dim() - 2))).expand(*steps.shape, *x.shape[2:])
    return x.gather(1, index).view(-1, context_length, *x.shape[2:])


def _dream(world_model: WorldModel, actor: Actor, start: ModelState, horizon: int, differentiable: bool) -> ImaginedTrajectory:
    """The actor's dream from ``start``: without a graph, or with one that reaches only the actor."""
    if not differentiable:
        with th.no_grad():
            return world_model.dream(start, horizon, _acting(actor, reparameterize=False))
    if actor.discrete:
        raise ValueError("a differentiable rollout needs Box actions: discrete samples carry no gradient")
    with _frozen(world_model), th.enable_grad():
        return world_model.dream(start, horizon, _acting(actor, reparameterize=True))


@contextlib.contextmanager
def _frozen(module: th.nn.Module) -> Iterator[None]:
    """Turn off the gradients of ``module``'s trainable weights for the duration, then back on."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def _acting(actor: Actor, reparameterize: bool) -> DreamPolicy:
    """The actor as a dream policy: a sampled raw action and the squashed one the world model takes."""

    def act(state: ModelState) -> tuple[th.Tensor, th.Tensor]:
        raw = actor.act(state.features, reparameterize=reparameterize)
        return raw, actor.squash(raw)

    return act


IMAGINE_STARTS = ("replay", "batch")


def check_imagination_lengths(
    config: ModelConfig, batch_size: int, context_length: int, horizon: int, batch_length: int, starts: str
) -> None:
    """Raise a ValueError if imagination has no start (``batch_size``) or does not fit the transformer
    (or, with ``"batch"`` starts, the world-model windows), and warn if it reaches sequence positions
    that windows of ``batch_length`` steps never train."""
    if batch_size < 1:
        raise ValueError(f"imagine_batch_size must be >= 1, got {batch_size}")
    if starts not in IMAGINE_STARTS:
        raise ValueError(f"imagine_starts must be one of {IMAGINE_STARTS}, got {starts!r}")
    if context_length < 1:
        raise ValueError(f"imagine_context_length must be >= 1, got {context_length}")
    config.check_sequence_length("imagine_context_length - 1 + imagine_horizon", context_length - 1 + horizon)
    if starts == "batch" and context_length > batch_length:
        raise ValueError(
            f"imagine_starts='batch' needs batch_length ({batch_length}) >= imagine_context_length ({context_length}): "
            "the rollouts start inside the world-model windows, after a full context"
        )
    if context_length - 1 + horizon > batch_length:
        warnings.warn(
            f"imagination reaches sequence position {context_length - 2 + horizon}, but world-model windows of "
            f"batch_length={batch_length} only train positions up to {batch_length - 1}: "
            "lengthen batch_length or shorten imagine_context_length / imagine_horizon",
            stacklevel=4,
        )
