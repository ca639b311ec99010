"""GITSTORM: GIT-STORM (and STORM, ``prior="mlp"``) as a Stable-Baselines3 algorithm.

Paper loop, per real environment step after ``learning_starts`` steps of random actions:

1. act with the policy on ``concat(z_t, h_{t-1})`` (the recurrent ``state`` of ``predict``);
2. store ``(o_t, a_t, r_t, terminated_t, truncated_t, first_t)`` in the sequence replay buffer;
3. one world-model update on ``batch_size`` windows of ``batch_length`` steps;
4. one imagination phase: ``imagine_batch_size`` real states, rolled ``imagine_horizon`` steps forward
   by the world model and the actor; the states end fresh replay windows of ``imagine_context_length``
   steps (``imagine_starts="replay"``, the paper) or lie inside the update's windows (``"batch"``);
5. one actor-critic update on the imagined trajectories.
(``train_freq`` / ``gradient_steps`` generalise "every step, once" as in every SB3 off-policy algorithm.)

References: Meo, Lica, Ikram et al., "Masked Generative Priors Improve World Models Sequence
Modelling Capabilities" (arXiv 2410.07836); Zhang et al., "STORM: Efficient Stochastic Transformer
based World Models for Reinforcement Learning" (NeurIPS 2023).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, update_learning_rate

from sb3_gitstorm.actor_critic import check_actor_gradient
from sb3_gitstorm.buffers import SequenceReplayBuffer, SequenceSamples, check_finite, check_replay_sizes
from sb3_gitstorm.dreams import log_dreams
from sb3_gitstorm.guards import DivergenceGuard, buffer_rollback
from sb3_gitstorm.imagination import check_imagination_lengths, imagine, imagine_from_batch
from sb3_gitstorm.policies import CnnPolicy, GITSTORMPolicy, MlpPolicy, check_env
from sb3_gitstorm.save_util import ResumableOffPolicyAlgorithm
from sb3_gitstorm.world_model import ImaginedTrajectory

SelfGITSTORM = TypeVar("SelfGITSTORM", bound="GITSTORM")


class GITSTORM(ResumableOffPolicyAlgorithm):
    """GIT-STORM: a transformer world model with a MaskGIT prior, and an actor-critic trained in imagination.

    Every argument but ``policy`` and ``env`` defaults to the paper's setting (Atari 100k, ``size="base"``).

    Parameters
    ----------
    policy : str or type
        ``"CnnPolicy"`` (uint8 images, HxWxC or CxHxW, resized to the model's ``image_size``), ``"MlpPolicy"``
        (flat ``Box`` vectors) or a :class:`~sb3_gitstorm.policies.GITSTORMPolicy` subclass.
    env : gymnasium.Env, VecEnv or str
        The environment (any number of environments); ``None`` only when loading a model for prediction.
        ``Discrete`` or bounded 1-D ``Box`` actions; ``VecNormalize`` is rejected (the world model normalises
        observations and rewards itself).
    learning_rate : float or Schedule
        Adam learning rate of the world model (1e-4).
    actor_learning_rate, critic_learning_rate : float or Schedule
        Adam learning rates of the actor and the critic (3e-5 each; Adam epsilon ``ac_adam_eps``).
    buffer_size : int
        Replay capacity in steps, over all environments (100k).
    learning_starts : int
        Steps of uniformly random actions before training (1024), at most ``buffer_size``; updates start
        once every environment's column of the replay holds a window of ``batch_length`` steps.
    batch_size, batch_length : int
        World-model batch: ``batch_size`` replay windows of ``batch_length`` steps (16 x 64);
        ``batch_length`` is at most ``buffer_size // n_envs`` and the model's ``max_length``.
    imagine_batch_size : int
        Imagined rollouts (start states) per actor-critic update (1024).
    imagine_context_length : int
        Real steps of each start's context (8, the start included), for replay and batch starts alike; also the
        context the policy acts on: the last ``imagine_context_length - 1`` steps of the episode give ``h_{t-1}``.
    imagine_horizon : int
        Imagined steps per rollout (16); ``imagine_context_length - 1 + imagine_horizon <= max_length``.
    imagine_starts : str
        Where the rollouts start. ``"replay"`` (the paper): at the end of fresh replay windows of
        ``imagine_context_length`` steps, encoded again for imagination. ``"batch"`` (DreamerV3's "start from
        every posterior state"): at any step ``t >= imagine_context_length - 1`` of the world-model update's own
        windows, from the posterior tokens the update sampled (train-mode encoder, before the update, as in
        DreamerV3); each start observes its own ``imagine_context_length`` steps exactly as a replay start and
        acting do (the same ``h``), without encoding a frame twice. Steps repeat only when
        ``imagine_batch_size > batch_size * (batch_length - imagine_context_length + 1)``. Needs
        ``batch_length >= imagine_context_length``.
    train_freq : int or tuple
        As in SB3: update every ``train_freq`` steps, or ``(n, "episode")``.
    gradient_steps : int
        Updates (world model, imagination, actor-critic) per ``train_freq``; ``-1``: as many as steps collected.
    gamma : float
        Discount (0.985).
    gae_lambda : float
        Lambda of the lambda-returns (0.95).
    ent_coef : float
        Entropy bonus of the actor (3e-4).
    tau : float
        Polyak coefficient of the slow critic (0.02, i.e. EMA decay 0.98).
    actor_gradient : str
        How the actor learns from the imagined returns. ``"reinforce"`` (STORM, the paper): the score-function
        gradient with the normalised advantage. ``"dynamics"`` (DreamerV1/V2, Box actions only): reparameterised
        actions, the rollout keeps its graph through ``h``, the cached keys and values and the reward,
        continuation and slow-critic heads, and the actor maximises the normalised lambda-returns; the world
        model's weights are frozen during that rollout and each ``z`` is the sample with DreamerV2's straight-through
        gradient of the prior's probabilities (for chunked MaskGIT decoding, of each token's last pass).
    prior : str
        The prior ``p(z_{t+1} | h_t)``: ``"maskgit"`` (GIT-STORM) or ``"mlp"`` (STORM).
    draft_steps : int
        MaskGIT draft in imagination: chunks of tokens filled one after the other from all-``[MASK]`` (1).
    revise_steps : int
        MaskGIT revise: chunks re-masked and re-sampled one after the other (1).
    revise_rounds : int
        Revise passes (1; 0: draft only). With the paper's 1 / 1 / 1 the one revise pass re-masks every token,
        so sampling is a single all-``[MASK]`` pass. The prior is trained on the same masks (``maskgit_schedule``).
    world_model_max_grad_norm : float
        Gradient-norm clip of the world model (1000).
    actor_critic_max_grad_norm : float
        Gradient-norm clip of the actor and of the critic (100).
    max_nonfinite_skips : int
        An update whose loss or gradient is not finite is skipped and counted (``train/skipped_*``,
        :class:`~sb3_gitstorm.guards.DivergenceGuard`); after this many in a row (10), a ``RuntimeError``. With
        ``imagine_starts="batch"`` a skipped world-model update skips that step's actor-critic update too.
    replay_buffer_kwargs : dict, optional
        Extra arguments of :class:`~sb3_gitstorm.buffers.SequenceReplayBuffer`; ``on_device`` (the
        replay on the GPU, ~1.2 GB for 100k 64x64x3 frames) defaults to True on CUDA, else False.
    mixed_precision : bool, optional
        bfloat16 autocast of the forward passes (updates and imagination; parameters, losses and sampling
        stay float32). None: on for CUDA GPUs with bf16, else off. On CUDA, matmuls may use TF32.
    stats_window_size : int
        Episodes averaged in the ``rollout/`` logs (100), as in SB3.
    log_video_interval : int
        Updates between TensorBoard images and videos of real frames and their open-loop dream (5000; 0: never;
        image observations with ``tensorboard_log`` only).
    tensorboard_log : str, optional
        TensorBoard log folder.
    policy_kwargs : dict, optional
        ``size`` (``"tiny"``, ``"small"``, ``"base"`` = the paper) and :class:`~sb3_gitstorm.config.ModelConfig`
        field overrides, e.g. ``dict(size="small", transformer_layers=3)``.
    verbose : int
        0 silent, 1 training logs, 2 debug.
    seed : int, optional
        Seed of Python, NumPy, PyTorch, the action space and the environments.
    device : torch.device or str
        ``"auto"`` uses CUDA when available.
    _init_setup_model : bool
        Build the networks now (SB3's convention; ``load`` passes False).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy, "CnnPolicy": CnnPolicy}
    policy: GITSTORMPolicy

    def __init__(
        self,
        policy: str | type[GITSTORMPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 1e-4,
        actor_learning_rate: float | Schedule = 3e-5,
        critic_learning_rate: float | Schedule = 3e-5,
        buffer_size: int = 100_000,
        learning_starts: int = 1024,
        batch_size: int = 16,
        batch_length: int = 64,
        imagine_batch_size: int = 1024,
        imagine_context_length: int = 8,
        imagine_horizon: int = 16,
        imagine_starts: str = "replay",
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        gamma: float = 0.985,
        gae_lambda: float = 0.95,
        ent_coef: float = 3e-4,
        tau: float = 0.02,
        actor_gradient: str = "reinforce",
        prior: str = "maskgit",
        draft_steps: int = 1,
        revise_steps: int = 1,
        revise_rounds: int = 1,
        world_model_max_grad_norm: float = 1000.0,
        actor_critic_max_grad_norm: float = 100.0,
        max_nonfinite_skips: int = 10,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        mixed_precision: bool | None = None,
        stats_window_size: int = 100,
        log_video_interval: int = 5_000,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if max_nonfinite_skips < 1:
            raise ValueError(f"max_nonfinite_skips must be >= 1, got {max_nonfinite_skips}")
        if log_video_interval < 0:
            raise ValueError(f"log_video_interval must be >= 0 (0 disables the videos), got {log_video_interval}")
        if env is not None:
            env = check_env(env, verbose)
        super().__init__(
            policy,
            env,  # type: ignore[arg-type]  # None: a model loaded for prediction only
            learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            replay_buffer_class=SequenceReplayBuffer,  # type: ignore[arg-type]
            replay_buffer_kwargs=replay_buffer_kwargs,
            policy_kwargs=dict(policy_kwargs or {}),
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            support_multi_env=True,
            supported_action_spaces=(spaces.Discrete, spaces.Box),
        )
        self.actor_learning_rate, self.critic_learning_rate = actor_learning_rate, critic_learning_rate
        self.batch_length = batch_length
        self.imagine_batch_size, self.imagine_context_length = imagine_batch_size, imagine_context_length
        self.imagine_horizon, self.imagine_starts = imagine_horizon, imagine_starts
        self.gae_lambda, self.ent_coef, self.actor_gradient = gae_lambda, ent_coef, actor_gradient
        self.prior, self.draft_steps, self.revise_steps, self.revise_rounds = prior, draft_steps, revise_steps, revise_rounds
        self.world_model_max_grad_norm, self.actor_critic_max_grad_norm = world_model_max_grad_norm, actor_critic_max_grad_norm
        self.max_nonfinite_skips = max_nonfinite_skips
        self._divergence_guard = DivergenceGuard()  # saved with the model: the counts go on after a resume
        self.log_video_interval, self.mixed_precision = log_video_interval, mixed_precision
        # Recurrent acting context of the training environments (see GITSTORMPolicy.predict).
        self._policy_state: tuple[np.ndarray, ...] | None = None
        if _init_setup_model:
            self._setup_model()

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """Set the training environment, with the constructor's checks (supported spaces, no VecNormalize)."""
        super().set_env(check_env(env, self.verbose), force_reset)

    def _setup_model(self) -> None:
        if not issubclass(self.policy_class, GITSTORMPolicy):
            raise ValueError(
                f"{self.policy_class.__name__} is not a GITSTORM policy: this file or object was not made by GITSTORM"
            )
        self._setup_lr_schedule()
        self.actor_lr_schedule = FloatSchedule(self.actor_learning_rate)
        self.critic_lr_schedule = FloatSchedule(self.critic_learning_rate)
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(
            self.observation_space,  # type: ignore[arg-type]  # a Box: checked by check_spaces
            self.action_space,
            self.lr_schedule,
            actor_learning_rate=self.actor_lr_schedule(1.0),
            critic_learning_rate=self.critic_lr_schedule(1.0),
            prior=self.prior,
            context_length=self.imagine_context_length,
            draft_steps=self.draft_steps,
            revise_steps=self.revise_steps,
            revise_rounds=self.revise_rounds,
            **self.policy_kwargs,
        ).to(self.device)
        config = self.policy.config
        check_replay_sizes(self.buffer_size, self.n_envs, self.learning_starts, self.batch_size, self.batch_length)
        config.check_sequence_length("batch_length", self.batch_length)
        imagination = (self.imagine_batch_size, self.imagine_context_length, self.imagine_horizon)
        check_imagination_lengths(config, *imagination, self.batch_length, self.imagine_starts)
        check_actor_gradient(self.actor_gradient, self.action_space)
        cuda = self.device.type == "cuda"
        if cuda:  # what a GPU user expects (PyTorch's advice for Ampere and later); a global torch setting
            th.set_float32_matmul_precision("high")
        if self.replay_buffer is None:  # it stores what the world model sees (resized images)
            model_spaces = (self.policy.model_observation_space, self.action_space)
            kwargs = {"on_device": cuda, **self.replay_buffer_kwargs}
            self.replay_buffer = SequenceReplayBuffer(self.buffer_size, *model_spaces, self.device, self.n_envs, **kwargs)
        self._convert_train_freq()
        self._resume_random_streams()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_policy_state"]

    # ------------------------------------------------------------------------ the paper's loop
    def learn(
        self: SelfGITSTORM,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "GITSTORM",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfGITSTORM:
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        if reset_num_timesteps or self._last_obs is None:
            self._policy_state = None  # the environments are about to be reset
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        check_finite(self._last_obs, "reset observation", self.num_timesteps)  # type: ignore[arg-type]
        return result

    def _sample_action(self, learning_starts: int, action_noise: Any = None, n_envs: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """1. Act: uniformly at random during warm-up, then with the policy and its recurrent context."""
        self._begin_step()
        if self.num_timesteps < learning_starts:
            action = np.array([self.action_space.sample() for _ in range(n_envs)])
        else:
            action, self._policy_state = self.predict(
                self._last_obs,  # type: ignore[arg-type]  # set by _setup_learn
                state=self._policy_state,
                episode_start=self._last_episode_starts,
            )
        buffer_action = self.policy.scale_action(action) if isinstance(self.action_space, spaces.Box) else action
        return action, buffer_action

    def _store_transition(
        self,
        replay_buffer: SequenceReplayBuffer,  # type: ignore[override]
        buffer_action: np.ndarray,
        new_obs: np.ndarray,  # type: ignore[override]
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """2. Store ``(o_t, a_t, r_t, done_t)`` with ``o_t`` the observation the action was taken at."""
        check_finite(reward, "reward", self.num_timesteps)
        check_finite(new_obs, "observation", self.num_timesteps)
        obs = self.policy.model_observation(th.as_tensor(self._last_obs)).numpy()
        replay_buffer.add(obs, buffer_action, reward, dones, infos, episode_start=self._last_episode_starts)  # type: ignore[arg-type]
        self._last_obs = new_obs
        self._last_episode_starts = dones
        self._end_step()

    def train(self, gradient_steps: int, batch_size: int) -> None:
        """3-5. World-model update, imagination, actor-critic update; ``gradient_steps`` times.

        When the world-model update is skipped (:class:`~sb3_gitstorm.guards.DivergenceGuard`), so is the
        actor-critic update with ``imagine_starts="batch"``, whose start states would be that update's
        tokens; ``"replay"`` starts encode fresh windows with the unchanged world model and go on. The
        logged losses average the updates that were made (a skipped one's are not finite).
        """
        if not self.replay_buffer.can_sample(max(self.batch_length, self.imagine_context_length)):
            return  # each environment column needs one full window first
        self._update_learning_rates()
        logs: dict[str, list[float]] = defaultdict(list)
        for _ in range(gradient_steps):
            world_model_logs, batch, tokens = self._train_world_model(batch_size)
            skipped = self._divergence_guard.skipped_last("world_model")
            if not skipped:
                for key, value in world_model_logs.items():
                    logs[f"world_model/{key}"].append(value)
            if skipped and self.imagine_starts == "batch":
                continue  # the skipped update's tokens come from a diverged forward pass: no states to imagine from
            actor_critic_logs = self._train_actor_critic(self._imagine(batch, tokens))
            if not self._divergence_guard.skipped_last("actor_critic"):
                for key, value in actor_critic_logs.items():
                    logs[f"train/{key}"].append(value)
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self._divergence_guard.record(self.logger)
        for key, values in logs.items():
            self.logger.record(key, float(np.mean(values)))
        interval = self.log_video_interval
        if interval > 0 and self._n_updates // interval > (self._n_updates - gradient_steps) // interval:
            lengths = (self.imagine_context_length, self.imagine_horizon)
            log_dreams(self.logger, self.policy.world_model, self.replay_buffer, *lengths)

    def _update_learning_rates(self) -> None:
        progress = self._current_progress_remaining
        for name, optimizer, schedule in (
            ("learning_rate", self.policy.world_model_optimizer, self.lr_schedule),
            ("actor_learning_rate", self.policy.actor_optimizer, self.actor_lr_schedule),
            ("critic_learning_rate", self.policy.critic_optimizer, self.critic_lr_schedule),
        ):
            update_learning_rate(optimizer, schedule(progress))
            self.logger.record(f"train/{name}", schedule(progress))

    def _train_world_model(self, batch_size: int) -> tuple[dict[str, float], SequenceSamples, th.Tensor]:
        """3. One world-model update on ``batch_size`` replay windows of ``batch_length`` steps.

        A skipped update (non-finite loss or gradient) leaves the world model as it was, the BatchNorm
        running statistics of its train-mode forward pass included.

        Returns the logs, the windows and their posterior tokens ``(B, L, K)`` (for ``"batch"`` starts)."""
        world_model = self.policy.world_model
        world_model.train()
        batch = self.replay_buffer.sample(batch_size, self.batch_length)
        rollback = buffer_rollback(world_model)
        with self.policy.autocast(self.mixed_precision):
            loss = world_model.loss(batch.observations, batch.actions, batch.rewards, batch.terminated, batch.episode_starts)
        step = (loss.total, self.policy.world_model_optimizer, world_model, self.world_model_max_grad_norm)
        self._divergence_guard.step("world_model", self._n_updates, loss.terms(), [step], self.max_nonfinite_skips, rollback)
        return loss.logs(), batch, loss.tokens

    def _imagine(self, batch: SequenceSamples, tokens: th.Tensor) -> ImaginedTrajectory:
        """4. Roll the world model forward from ``imagine_batch_size`` real states: inside the
        world-model ``batch`` with its posterior ``tokens`` or at the end of fresh replay windows."""
        world_model, actor = self.policy.world_model, self.policy.actor_critic.actor
        horizon, n_starts, context_length = self.imagine_horizon, self.imagine_batch_size, self.imagine_context_length
        differentiable = self.actor_gradient == "dynamics"
        world_model.eval()
        with self.policy.autocast(self.mixed_precision):
            if self.imagine_starts == "batch":
                starts = (tokens, batch.actions, batch.episode_starts)
                return imagine_from_batch(world_model, actor, *starts, horizon, n_starts, context_length, differentiable)
            context = self.replay_buffer.sample(n_starts, context_length)
            real = (context.observations, context.actions, context.episode_starts)
            return imagine(world_model, actor, *real, horizon, differentiable)

    def _train_actor_critic(self, trajectory: ImaginedTrajectory) -> dict[str, float]:
        """5. One actor and one critic update on the imagined trajectories, then the slow-critic update."""
        actor_critic = self.policy.actor_critic
        actor_critic.train()
        rollback = buffer_rollback(actor_critic)  # the loss updates the return scale: put back if the update is skipped
        with self.policy.autocast(self.mixed_precision):
            loss = actor_critic.loss(trajectory, self.gamma, self.gae_lambda, self.ent_coef, self.actor_gradient == "dynamics")
        steps = [
            (loss.actor, self.policy.actor_optimizer, actor_critic.actor, self.actor_critic_max_grad_norm),
            (loss.critic, self.policy.critic_optimizer, actor_critic.critic, self.actor_critic_max_grad_norm),
        ]
        if self._divergence_guard.step("actor_critic", self._n_updates, loss.terms(), steps, self.max_nonfinite_skips, rollback):
            actor_critic.update_target(self.tau)
        return {**loss.logs(), "imagined_reward": trajectory.rewards.mean().item()}
