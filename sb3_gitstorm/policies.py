"""GITSTORM policies: the world model and the actor-critic behind SB3's ``predict`` API.

Acting needs ``h_{t-1}``, which depends on the recent ``(z, a)`` history of each environment, so
``predict`` carries that history as its recurrent ``state`` (like sb3-contrib's RecurrentPPO):

    action, state = model.predict(obs, state=state, episode_start=episode_start)

The state is a tuple of numpy arrays ``(tokens, actions, lengths)`` holding the last
``context_length - 1`` latents (as class indices) and actions of every environment; rows flagged
in ``episode_start`` are emptied first. The current frame is always encoded: the actor acts on
``concat(z_t, h_{t-1})`` with ``z_t`` from the real observation (``h`` is zero at an episode start).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.type_aliases import GymEnv, PyTorchObs, Schedule
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize

from sb3_gitstorm.actor_critic import ActorCritic
from sb3_gitstorm.config import ModelConfig
from sb3_gitstorm.priors import DecodeSchedule
from sb3_gitstorm.world_model import ModelState, WorldModel

__all__ = ["CnnPolicy", "ContextState", "GITSTORMPolicy", "MlpPolicy", "check_env", "check_spaces", "resize_images"]

ContextState = tuple[np.ndarray, np.ndarray, np.ndarray]


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """Raise a clear error for spaces GITSTORM does not support.

    Supported: Box observations (uint8 images for CnnPolicy, anything flat for MlpPolicy) and
    Discrete or bounded 1-D Box actions.
    """
    if not isinstance(observation_space, spaces.Box):
        raise TypeError(
            f"GITSTORM supports Box observation spaces (images or vectors), got {observation_space}. "
            "Flatten Dict/Tuple observations (e.g. gymnasium.wrappers.FlattenObservation) first."
        )
    if isinstance(action_space, spaces.Discrete):
        return
    if not isinstance(action_space, spaces.Box):
        raise TypeError(f"GITSTORM supports Discrete and bounded Box action spaces, got {action_space}")
    if len(action_space.shape) != 1:
        raise ValueError(f"GITSTORM supports 1-D Box action spaces, got shape {action_space.shape}")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ValueError(f"GITSTORM needs bounded Box actions (finite low and high), got {action_space}")


def check_env(env: GymEnv | str, verbose: int = 0) -> GymEnv:
    """Make the env if given by id and reject what GITSTORM cannot train on, before SB3 wraps it.

    Raises
    ------
    TypeError, ValueError
        For unsupported spaces (:func:`check_spaces`) or a ``VecNormalize`` wrapper (GITSTORM
        normalises observations and rewards itself).
    """
    env = maybe_make_env(env, verbose)
    check_spaces(env.observation_space, env.action_space)
    if isinstance(env, VecEnv) and unwrap_vec_normalize(env) is not None:
        raise ValueError("GITSTORM normalises observations and rewards itself (symlog); remove the VecNormalize wrapper")
    return env


def resize_images(images: th.Tensor, size: int) -> th.Tensor:
    """Resize uint8 channel-first images ``(N, C, H, W)`` to ``(N, C, size, size)`` (area filter down, bilinear up)."""
    if images.shape[-2:] == (size, size):
        return images
    mode = "area" if images.shape[-1] >= size and images.shape[-2] >= size else "bilinear"
    resized = F.interpolate(images.float(), size=(size, size), mode=mode)
    return resized.round_().clamp_(0, 255).to(th.uint8)


class GITSTORMPolicy(BasePolicy):
    """World model + actor-critic, with the optimisers of both.

    Parameters
    ----------
    observation_space : spaces.Box
        The environment's observation space.
    action_space : spaces.Discrete or spaces.Box
        The environment's action space (Box: 1-D and bounded).
    lr_schedule : Schedule
        World-model learning rate schedule.
    actor_learning_rate, critic_learning_rate : float
        Adam learning rates of the actor and the critic (eps 1e-5).
    prior : str
        ``"maskgit"`` (GIT-STORM) or ``"mlp"`` (STORM).
    context_length : int
        Steps of real history behind ``h`` when acting (``imagine_context_length``); the state keeps
        the last ``context_length - 1`` of them.
    draft_steps, revise_steps, revise_rounds : int
        Draft-and-revise schedule of the MaskGIT prior (:class:`~sb3_gitstorm.priors.DecodeSchedule`).
    images : bool
        Use the CNN encoder / decoder (CnnPolicy) rather than MLPs (MlpPolicy).
    size : str
        ``"tiny"``, ``"small"`` or ``"base"`` (paper size).
    **model_kwargs
        Per-field overrides of :class:`~sb3_gitstorm.config.ModelConfig`.
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        actor_learning_rate: float = 3e-5,
        critic_learning_rate: float = 3e-5,
        prior: str = "maskgit",
        context_length: int = 8,
        draft_steps: int = 1,
        revise_steps: int = 1,
        revise_rounds: int = 1,
        images: bool = False,
        size: str = "base",
        **model_kwargs: Any,
    ) -> None:
        super().__init__(observation_space, action_space, squash_output=isinstance(action_space, spaces.Box))
        self.config = ModelConfig.from_size(size, **model_kwargs)
        self.size, self.model_kwargs, self.prior, self.images = size, model_kwargs, prior, images
        self.actor_learning_rate, self.critic_learning_rate = actor_learning_rate, critic_learning_rate
        self.context_length = context_length
        self.decode = DecodeSchedule(draft_steps, revise_steps, revise_rounds)
        self.model_observation_space = self._model_observation_space(observation_space)

        self.world_model = WorldModel(self.model_observation_space, action_space, self.config, prior, images, self.decode)
        self.actor_critic = ActorCritic(self.config, action_space)
        self.world_model_optimizer = th.optim.Adam(self.world_model.parameters(), lr=lr_schedule(1))
        eps = self.config.ac_adam_eps
        self.actor_optimizer = th.optim.Adam(self.actor_critic.actor.parameters(), lr=actor_learning_rate, eps=eps)
        self.critic_optimizer = th.optim.Adam(self.actor_critic.critic.parameters(), lr=critic_learning_rate, eps=eps)

    def _model_observation_space(self, observation_space: spaces.Box) -> spaces.Box:
        """The space the world model sees: images resized to ``image_size`` squared, vectors unchanged."""
        if not self.images:
            return observation_space
        side = self.config.image_size
        return spaces.Box(0, 255, (observation_space.shape[0], side, side), np.uint8)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            lr_schedule=self._dummy_schedule,
            actor_learning_rate=self.actor_learning_rate,
            critic_learning_rate=self.critic_learning_rate,
            prior=self.prior,
            context_length=self.context_length,
            draft_steps=self.decode.draft_steps,
            revise_steps=self.decode.revise_steps,
            revise_rounds=self.decode.revise_rounds,
            images=self.images,
            size=self.size,
            **self.model_kwargs,
        )
        data.pop("normalize_images", None)
        return data

    def autocast(self, mixed_precision: bool | None) -> th.autocast:
        """bfloat16 autocast on the policy's device if ``mixed_precision`` (None: on CUDA with bf16), else a no-op."""
        if mixed_precision is None:
            mixed_precision = self.device.type == "cuda" and th.cuda.is_bf16_supported()
        return th.autocast(self.device.type, dtype=th.bfloat16, enabled=mixed_precision)

    # ------------------------------------------------------------------------------ acting
    def model_observation(self, obs: th.Tensor) -> th.Tensor:
        """Environment observations ``(N, *obs_shape)`` to what the world model takes (resized images)."""
        return resize_images(obs, self.config.image_size) if self.images else obs

    def initial_state(self, n_envs: int) -> ContextState:
        """An empty acting context for ``n_envs`` environments."""
        k = max(self.context_length - 1, 0)
        action_shape = (n_envs, k) if self.world_model.discrete else (n_envs, k, self.world_model.action_dim)
        return (
            np.zeros((n_envs, k, self.config.latent_tokens), dtype=np.int64),
            np.zeros(action_shape, dtype=np.int64 if self.world_model.discrete else np.float32),
            np.zeros(n_envs, dtype=np.int64),
        )

    def observe(self, tokens: th.Tensor, actions: th.Tensor, lengths: th.Tensor, current: th.Tensor) -> ModelState:
        """The world-model state at the current observations, behind them each row's context.

        Parameters
        ----------
        tokens, actions, lengths : th.Tensor
            The context (:meth:`initial_state`): the last ``lengths`` (right-aligned) of the
            ``context_length - 1`` steps of each row are real, the rest is padding.
        current : th.Tensor
            Long ``(N, K)``: tokens of the current observations.
        """
        k = tokens.shape[1]
        # The first real step starts an episode; the padding before it is another segment, never attended to.
        starts = th.arange(k + 1, device=tokens.device)[None, :] == (k - lengths)[:, None]
        return self.world_model.observe(th.cat([tokens, current[:, None]], 1), actions, starts)

    def act(self, obs: th.Tensor, state: ContextState, deterministic: bool = False) -> tuple[th.Tensor, ContextState]:
        """Actions for a batch of observations and the updated context.

        Parameters
        ----------
        obs : th.Tensor
            ``(N, *obs_shape)`` environment observations.
        state : ContextState
            Context of the ``N`` environments (already reset where episodes start).
        deterministic : bool
            Posterior mode and actor mode instead of samples.

        Returns
        -------
        tuple
            Actions as the world model takes them (``(N,)`` indices or ``(N, A)`` in [-1, 1]) and
            the new state.
        """
        tokens, actions, lengths = (th.as_tensor(x, device=self.device) for x in state)
        current = self.world_model.sample_tokens(self.model_observation(obs), deterministic)
        model_state = self.observe(tokens, actions, lengths, current)
        actor = self.actor_critic.actor
        action = actor.squash(actor.act(model_state.features, deterministic))
        if tokens.shape[1] > 0:
            tokens = th.cat([tokens[:, 1:], current[:, None]], 1)
            actions = th.cat([actions[:, 1:], action[:, None].to(actions.dtype)], 1)
            lengths = (lengths + 1).clamp(max=tokens.shape[1])
        new_state = tuple(x.cpu().numpy() for x in (tokens, actions, lengths))
        return action, new_state  # type: ignore[return-value]

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """Stateless action (empty context, ``h = 0``); ``predict`` carries the context instead."""
        assert isinstance(observation, th.Tensor)  # Box observations only
        action, _ = self.act(observation, self.initial_state(observation.shape[0]), deterministic)
        return action

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Actions for observations, carrying each environment's recent history as ``state``.

        Parameters
        ----------
        observation : np.ndarray
            One observation or a batch ``(n_envs, *obs_shape)``.
        state : tuple of np.ndarray, optional
            The state returned by the previous call; None starts every environment afresh.
        episode_start : np.ndarray, optional
            ``(n_envs,)`` bool: these environments start a new episode (their context is emptied).
        deterministic : bool
            Use the modes of the posterior and of the actor.

        Returns
        -------
        tuple
            Environment actions (rescaled to the Box bounds) and the next state.
        """
        self.set_training_mode(False)
        if isinstance(observation, tuple) and len(observation) == 2 and isinstance(observation[1], dict):
            raise ValueError(
                "predict() got a tuple (obs, info): pass the observation alone. "
                "Gym's `obs, info = env.reset()` differs from SB3's `obs = vec_env.reset()`."
            )
        if isinstance(observation, np.ndarray):
            observation = np.ascontiguousarray(observation)  # a flipped frame (negative strides) cannot become a tensor
        try:
            obs, vectorized = self.obs_to_tensor(observation)
        except ValueError as error:
            shape = self.observation_space.shape
            accepted = f"{shape} or, channel-last, {shape[1:] + shape[:1]}" if self.images else str(shape)  # type: ignore[index]
            raise ValueError(
                f"predict() got an observation of shape {np.shape(observation)}; this model takes observations of shape "  # type: ignore[arg-type]
                f"{accepted}, one at a time or in a batch (n_envs, *shape)"
            ) from error
        n_envs = obs.shape[0]  # type: ignore[union-attr]
        context = self._check_state(state, n_envs)
        if episode_start is not None:
            starts = np.asarray(episode_start, dtype=bool).reshape(-1)
            if starts.shape[0] != n_envs:
                raise ValueError(f"episode_start has {starts.shape[0]} entries for {n_envs} observations")
            context = (context[0], context[1], np.where(starts, 0, context[2]))
        with th.no_grad():
            action, new_state = self.act(obs, context, deterministic)  # type: ignore[arg-type]
        actions = action.cpu().numpy()
        if isinstance(self.action_space, spaces.Box):
            actions = self.unscale_action(actions.reshape(-1, *self.action_space.shape))
        if not vectorized:
            actions = actions.squeeze(axis=0)
        return actions, new_state

    def _check_state(self, state: tuple[np.ndarray, ...] | None, n_envs: int) -> ContextState:
        empty = self.initial_state(n_envs)
        if state is None:
            return empty
        if len(state) != 3 or any(np.shape(s) != e.shape for s, e in zip(state, empty, strict=False)):
            shapes = [np.shape(s) for s in state]
            expected = [e.shape for e in empty]
            raise ValueError(
                f"state does not match this model and {n_envs} environment(s): got arrays of shapes {shapes}, "
                f"expected {expected}. Pass the state returned by the previous predict() call, or None."
            )
        return state


class MlpPolicy(GITSTORMPolicy):
    """GITSTORM policy with MLP encoder / decoder, for flat (vector) observations."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any) -> None:
        if not isinstance(observation_space, spaces.Box):
            raise TypeError(f"MlpPolicy needs a Box observation space, got {observation_space}")
        kwargs["images"] = False
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class CnnPolicy(GITSTORMPolicy):
    """GITSTORM policy with STORM's CNN encoder / decoder, for uint8 image observations (resized to 64x64)."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any) -> None:
        if not (
            isinstance(observation_space, spaces.Box)
            and is_image_space(observation_space)
            and is_image_space_channels_first(observation_space)
        ):
            raise ValueError(
                "CnnPolicy needs channel-first uint8 image observations with values in [0, 255] "
                f"(SB3 transposes HxWxC environments for you), got {observation_space}. "
                "Use MlpPolicy for vector observations."
            )
        kwargs["images"] = True
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)
