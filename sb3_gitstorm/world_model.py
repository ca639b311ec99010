"""The STORM / GIT-STORM world model.

::

    o_t --encoder--> q(z_t | o_t)  (K categoricals of C classes, unimix, straight-through sample)
    z_t --decoder--> o_t reconstruction
    (z_<=t, a_<=t) --causal transformer--> h_t
    h_t --> reward r_t (symlog two-hot), termination (Bernoulli), prior p(z_{t+1} | h_t)

The prior is STORM's linear head or GIT-STORM's MaskGIT transformer (:mod:`sb3_gitstorm.priors`).

Everything outside the loss goes through three verbs: :meth:`WorldModel.observe` a real context
(``h`` and a key/value cache from real tokens and actions), :meth:`WorldModel.step` one imagined
transition, and :meth:`WorldModel.dream` a rollout of them (with an actor, or open loop with given
actions). Acting, imagination, the TensorBoard dreams and the world-model metrics all use them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs
from torch import nn

from sb3_gitstorm.config import ModelConfig
from sb3_gitstorm.distributions import (
    SymlogTwoHot,
    kl_balance,
    sample_one_hot,
    sample_unimix,
    symlog,
    unimix_log_probs,
)
from sb3_gitstorm.networks import ImageDecoder, ImageEncoder, mlp, scale_output_init
from sb3_gitstorm.priors import PAPER_DECODE, DecodeSchedule, make_prior
from sb3_gitstorm.transformer import CausalTransformer, KVCache, autocast_dtype, segment_positions

ENCODE_CHUNK = 1024  # observations per encoder call when encoding without gradients
# Images on CPU: 64 frames per call keep every activation of a chunk in cache and every tensor
# below glibc's mmap threshold (no page faults on each fresh allocation): 1.6-2x faster than 1024.
CPU_IMAGE_ENCODE_CHUNK = 64


@dataclasses.dataclass(frozen=True)
class Latents:
    """Latent tokens ``z`` and the sequence model's ``h`` that goes with them (``h_{t-1}`` for ``z_t``).

    Attributes
    ----------
    tokens : th.Tensor
        Long ``(..., K)``: the classes of ``z``.
    hidden : th.Tensor
        ``(..., hidden_dim)``: ``h``, zero at an episode start.
    num_classes : int
        ``C``, the classes of each token.
    straight_through : th.Tensor or None
        ``(..., K, C)``, zero-valued: ``p - sg(p)`` for the probabilities ``p`` the prior drew ``z`` from,
        in a differentiable dream (DreamerV2's straight-through gradient into ``z``); None elsewhere.
    """

    tokens: th.Tensor
    hidden: th.Tensor
    num_classes: int
    straight_through: th.Tensor | None = dataclasses.field(default=None, kw_only=True)

    @property
    def latents(self) -> th.Tensor:
        """Flat one-hot latents ``(..., K*C)`` (decodable into observations), with the straight-through
        gradient where there is one."""
        one_hot = F.one_hot(self.tokens, self.num_classes).float()
        if self.straight_through is not None:
            one_hot = one_hot + self.straight_through
        return one_hot.flatten(-2)

    @property
    def features(self) -> th.Tensor:
        """Actor-critic inputs ``concat(z, h)``, ``(..., K*C + hidden_dim)``."""
        return th.cat([self.latents, self.hidden], -1)


@dataclasses.dataclass(frozen=True)
class ModelState(Latents):
    """Where a batch of sequences stands: the current ``z_t``, ``h_{t-1}`` and what the next step needs.

    Attributes
    ----------
    cache : KVCache or None
        Keys and values of the steps behind ``h_{t-1}`` (None: no further steps planned).
    segment, position : th.Tensor
        Long ``(B, 1)``: episode segment and in-episode position of step ``t``.
    """

    cache: KVCache | None
    segment: th.Tensor
    position: th.Tensor


@dataclasses.dataclass(frozen=True)
class ImaginedTrajectory(Latents):
    """A batch of imagined rollouts of ``H`` steps: states ``s_0 .. s_H`` and the transitions between them.

    ``tokens`` ``(B, H + 1, K)`` and ``hidden`` ``(B, H + 1, hidden_dim)`` hold ``z_t`` and ``h_{t-1}`` of
    every state (``features`` is the actor-critic input).

    Attributes
    ----------
    actions : th.Tensor
        Raw actions taken at ``s_0 .. s_{H-1}``: indices ``(B, H)`` or unclipped vectors ``(B, H, A)``
        (the given actions themselves in open-loop prediction).
    rewards, continues : th.Tensor
        ``(B, H)``: predicted reward and probability that the episode continues after each action.
    """

    actions: th.Tensor
    rewards: th.Tensor
    continues: th.Tensor


# Picks the actions of a dream: the state to act in -> (raw action, action the world model takes).
DreamPolicy = Callable[[ModelState], tuple[th.Tensor, th.Tensor]]


class WorldModelLoss(NamedTuple):
    """The total loss and its parts (scalars); the parts are detached, for logging.

    ``reconstruction`` is the loss term (with ``motion_weight``, the motion-weighted squared error),
    ``reconstruction_error`` the plain squared error, summed over each observation and averaged over
    the steps (the same number without ``motion_weight``): the one to compare between settings.

    ``kl_dynamics`` / ``kl_representation`` are the clipped (free-bits) loss terms, ``kl`` the raw
    KL between posterior and prior on the same tokens, ``prior_token_ce`` the prior's
    cross-entropy on the tokens it was asked to predict (the masked tokens for MaskGIT), and
    ``imagination_kl`` the KL over all tokens from the posterior to the distribution imagination samples
    ``z_{t+1}`` from, with ``h_t`` of the sequence model in eval mode (no dropout) as in imagination, the
    number to compare between priors (:meth:`~sb3_gitstorm.priors.LatentPrior.sampler_kl`): exact for
    one-pass priors (the MLP prior, MaskGIT 1/1/1), an upper bound estimated with
    ``imagination_kl_orders`` decoding orders for a MaskGIT draft without revise rounds, and None (not
    logged) with revise rounds, whose samples have no tractable likelihood (``prior.kl_kind``), or when
    ``imagination_kl_orders`` is 0 (the diagnostic's extra no-grad passes are skipped).
    ``tokens`` (long ``(B, L, K)``) is the posterior sample of every step, from which imagination can
    start (:func:`~sb3_gitstorm.imagination.imagine_from_batch`).
    """

    total: th.Tensor
    reconstruction: th.Tensor
    reconstruction_error: th.Tensor
    reward: th.Tensor
    termination: th.Tensor
    kl_dynamics: th.Tensor
    kl_representation: th.Tensor
    kl: th.Tensor
    prior_token_ce: th.Tensor
    prior_mask_ratio: th.Tensor
    imagination_kl: th.Tensor | None
    tokens: th.Tensor

    def terms(self) -> dict[str, th.Tensor]:
        """The loss, its parts and the KL, by their log names (``world_model/<name>``)."""
        return {
            "loss": self.total,
            "reconstruction_loss": self.reconstruction,
            "reward_loss": self.reward,
            "termination_loss": self.termination,
            "kl_dynamics_loss": self.kl_dynamics,
            "kl_representation_loss": self.kl_representation,
            "kl": self.kl,
            "prior_token_loss": self.prior_token_ce,
        }

    def logs(self) -> dict[str, float]:
        """:meth:`terms` and the diagnostics that are not trained on, as floats."""
        diagnostics = {"reconstruction_error": self.reconstruction_error, "prior_mask_ratio": self.prior_mask_ratio}
        if self.imagination_kl is not None:
            diagnostics["imagination_kl"] = self.imagination_kl
        return {name: value.item() for name, value in (self.terms() | diagnostics).items()}


def motion_weights(frames: th.Tensor, episode_starts: th.Tensor, coef: float) -> th.Tensor:
    """Per-pixel reconstruction weights that favour what moves within each episode (``motion_weight``).

    Parameters
    ----------
    frames : th.Tensor
        ``(B, L, C, H, W)`` images in [0, 1]: ``B`` windows of ``L`` steps.
    episode_starts : th.Tensor
        Bool ``(B, L)``: the frame is the first of an episode. A reset is no motion: the standard
        deviations are taken over each episode segment of a window on its own.
    coef : float
        Extra weight of a pixel whose standard deviation over the segment is the frame's mean one.

    Returns
    -------
    th.Tensor
        ``(B, L, 1, H, W)`` weights ``1 + coef * sd / mean(sd)`` of every frame's pixels, normalised to
        mean 1 over the frame, so the loss keeps its scale; ``sd`` is the pixel's standard deviation over
        the steps of the frame's segment, largest over the channels. A segment without motion (one step,
        or still frames) weights every pixel 1. No gradient flows through them.
    """
    with th.no_grad(), th.autocast(frames.device.type, enabled=False):  # float32 sums
        frames = frames.float()
        segments, positions = segment_positions(episode_starts)
        segments = segments - segments[:, :1]  # 0 .. S-1 in each window
        windows = th.arange(frames.shape[0], device=frames.device)[:, None]
        steps = th.arange(frames.shape[1], device=frames.device)
        # Deviations from the segment's first frame: exactly zero where nothing moves (no rounding noise
        # for the normalisation to blow up), and a numerically stable variance.
        shifted = (frames - frames[windows, steps - positions]).flatten(2)
        member = F.one_hot(segments, int(segments.max()) + 1).transpose(1, 2).float()  # (B, S, L)
        average = member / member.sum(-1, keepdim=True).clamp(min=1)
        mean = average @ shifted
        variance = average @ shifted.square() - mean.square()
        sd = variance.clamp(min=0.0).sqrt().view(*mean.shape[:2], *frames.shape[2:]).amax(2, keepdim=True)
        weights = 1.0 + coef * sd / sd.mean((-2, -1), keepdim=True).clamp(min=1e-6)
        weights = weights / weights.mean((-2, -1), keepdim=True)  # (B, S, 1, H, W): one map per segment
        return weights[windows, segments]


class WorldModel(nn.Module):
    """Encoder, decoder, sequence model, reward / termination heads and prior.

    Parameters
    ----------
    observation_space : spaces.Box
        The space the model sees: channel-first uint8 images of ``config.image_size`` squared
        (``images=True``), or any Box (flattened, ``images=False``).
    action_space : spaces.Discrete or spaces.Box
        Discrete actions enter the sequence model one-hot, Box actions as the scaled vector in [-1, 1].
    config : ModelConfig
        Dimensions and loss settings.
    prior : str
        ``"maskgit"`` (GIT-STORM) or ``"mlp"`` (STORM).
    images : bool
        CNN encoder / decoder (images) or MLPs (vectors).
    decode : DecodeSchedule
        Draft-and-revise schedule of the MaskGIT prior in imagination (paper: 1, 1, 1).
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Space,
        config: ModelConfig,
        prior: str,
        images: bool,
        decode: DecodeSchedule = PAPER_DECODE,
    ) -> None:
        super().__init__()
        self.config = config
        self.observation_space = observation_space
        self.is_image = images
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.action_dim = spaces.flatdim(action_space)  # one-hot size, or the Box's size
        self.obs_shape = tuple(observation_space.shape)
        k, c = config.latent_tokens, config.latent_classes

        self.encoder: nn.Module
        self.decoder: nn.Module
        if self.is_image:
            channels, *side = self.obs_shape
            if side != [config.image_size] * 2:
                raise ValueError(
                    f"the world model sees channel-first images of {config.image_size}x{config.image_size} "
                    f"(image_size), got observations of shape {self.obs_shape}"
                )
            image_encoder = ImageEncoder(channels, config.conv_channels, config.image_size)
            self.encoder = nn.Sequential(image_encoder, nn.Linear(image_encoder.out_dim, k * c))
            self.decoder = ImageDecoder(config.latent_dim, config.conv_channels, channels, config.image_size)
        else:
            if config.motion_weight:
                raise ValueError(f"motion_weight weights the pixels of images, got vector observations {self.obs_shape}")
            obs_dim = int(np.prod(self.obs_shape))
            self.encoder = mlp(obs_dim, k * c, config.mlp_hidden, config.mlp_layers)
            self.decoder = mlp(config.latent_dim, obs_dim, config.mlp_hidden, config.mlp_layers)

        self.transformer = CausalTransformer(
            input_dim=config.latent_dim + self.action_dim,
            dim=config.hidden_dim,
            layers=config.transformer_layers,
            heads=config.transformer_heads,
            ffn_dim=config.transformer_ffn,
            dropout=config.dropout,
            max_length=config.max_length,
            latent_shape=config.latent_shape,
        )
        self.reward_head = scale_output_init(
            mlp(config.hidden_dim, config.reward_bins, config.head_hidden, config.head_layers), 0.0
        )
        self.termination_head = mlp(config.hidden_dim, 1, config.head_hidden, config.head_layers)
        self.prior = make_prior(prior, config, decode)
        self.twohot = SymlogTwoHot(config.reward_bins, *config.twohot_range)

    # ----------------------------------------------------------------- observations and latents
    def preprocess(self, obs: th.Tensor) -> th.Tensor:
        """A flat batch of raw observations ``(N, *obs_shape)`` to network input ``(N, *in)``: images in
        [0, 1] (channels-last, converted while still uint8), vectors flattened (SB3's ``preprocess_obs``)."""
        if self.is_image:
            return obs.contiguous(memory_format=th.channels_last).float().div_(255.0)
        return preprocess_obs(obs, self.observation_space).flatten(1)  # type: ignore[union-attr]  # Box: a tensor

    def _flatten_obs(self, obs: th.Tensor) -> tuple[th.Size, th.Tensor]:
        n = len(self.obs_shape)
        if tuple(obs.shape[obs.dim() - n :]) != self.obs_shape:
            raise ValueError(f"observation shape {tuple(obs.shape)} does not end with the model's {self.obs_shape}")
        return obs.shape[: obs.dim() - n], obs.reshape(-1, *self.obs_shape)

    def posterior_logits(self, obs: th.Tensor) -> th.Tensor:
        """Logits of ``q(z_t | o_t)`` before the uniform mix, ``(..., K, C)``, from raw observations.

        Without gradients, large batches (the imagination context) are encoded in chunks
        (:data:`CPU_IMAGE_ENCODE_CHUNK` images on CPU, :data:`ENCODE_CHUNK` otherwise), which keeps
        the float copies and activations in cache: about 2x faster on CPU.
        """
        lead, flat = self._flatten_obs(obs)
        if th.is_grad_enabled():
            chunks = (flat,)
        else:
            chunks = flat.split(CPU_IMAGE_ENCODE_CHUNK if self.is_image and flat.device.type == "cpu" else ENCODE_CHUNK)
        logits = th.cat([self.encoder(self.preprocess(chunk)) for chunk in chunks])
        return logits.view(*lead, self.config.latent_tokens, self.config.latent_classes)

    def posterior(self, obs: th.Tensor) -> th.Tensor:
        """``q(z_t | o_t)`` as log-probabilities ``(..., K, C)`` from raw observations ``(..., *obs_shape)``."""
        return unimix_log_probs(self.posterior_logits(obs), self.config.unimix)

    def encode(self, obs: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """Raw observations ``(..., *obs_shape)`` to one-hot latents ``(..., K, C)``.

        Without gradients the sample is drawn straight from the logits (:func:`sample_unimix`, the
        same distribution), skipping the mixed log-probabilities.
        """
        if th.is_grad_enabled():
            return sample_one_hot(self.posterior(obs), deterministic)
        return F.one_hot(self.sample_tokens(obs, deterministic), self.config.latent_classes).to(th.get_default_dtype())

    def sample_tokens(self, obs: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """Class indices ``(..., K)`` of a sample of ``q(z_t | o_t)`` (no straight-through gradient)."""
        logits = self.posterior_logits(obs)
        # The uniform mix is monotone, so the mode of the mixed distribution is the argmax of the logits.
        return logits.argmax(-1) if deterministic else sample_unimix(logits, self.config.unimix)

    def decode(self, latent: th.Tensor) -> th.Tensor:
        """Flat one-hot latents ``(..., K*C)`` to reconstructions ``(..., *in)`` (images in [0, 1] scale,
        vectors in symlog scale)."""
        lead = latent.shape[:-1]
        out = self.decoder(latent.reshape(-1, latent.shape[-1]))
        return out.view(*lead, *out.shape[1:])

    def tokens_to_latent(self, tokens: th.Tensor) -> th.Tensor:
        """Class indices ``(..., K)`` to flat one-hot latents ``(..., K*C)``."""
        return F.one_hot(tokens, self.config.latent_classes).float().flatten(-2)

    # ------------------------------------------------------------------------- sequence model
    def sequence_input(self, latent: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """``concat(z_t, a_t)``: flat latents ``(..., K*C)`` and actions (indices ``(...)`` or
        scaled vectors ``(..., A)``) to ``(..., K*C + action_dim)``."""
        if self.discrete:
            actions = F.one_hot(actions.long(), self.action_dim).to(latent.dtype)
        return th.cat([latent, actions.to(latent.dtype)], -1)

    def reward(self, hidden: th.Tensor) -> th.Tensor:
        """Predicted reward ``r_t`` from ``h_t``, shape ``hidden.shape[:-1]``."""
        return self.twohot.mean(self.reward_head(hidden))

    def continuation(self, hidden: th.Tensor) -> th.Tensor:
        """Probability that the episode goes on after step ``t``, shape ``hidden.shape[:-1]``."""
        return th.sigmoid(-self.termination_head(hidden).squeeze(-1).float())

    # ------------------------------------------------------------------------ observe, step, dream
    def observe(self, tokens: th.Tensor, actions: th.Tensor, episode_starts: th.Tensor, horizon: int = 0) -> ModelState:
        """The state after a real context: ``z_T`` and ``h_{T-1}`` from ``(z_1, a_1) .. (z_{T-1}, a_{T-1})``.

        Parameters
        ----------
        tokens : th.Tensor
            Long ``(B, T, K)``: ``z_1 .. z_T``.
        actions : th.Tensor
            ``(B, T - 1)`` indices or ``(B, T - 1, A)`` scaled actions taken at the first ``T - 1`` steps.
        episode_starts : th.Tensor
            Bool ``(B, T)``. No step attends across an episode start; if ``z_T`` starts an episode,
            ``h_{T-1}`` is zero (as at the start of a real episode).
        horizon : int
            Imagined steps to follow: the key/value cache gets room for them (0: no cache).

        Returns
        -------
        ModelState
        """
        batch, context = episode_starts.shape
        segments, positions = segment_positions(episode_starts)
        cache = None
        if horizon > 0:  # stored in the dtype the key/value projections produce (bf16 under autocast)
            cache = self.transformer.new_cache(batch, context - 1 + horizon, tokens.device, autocast_dtype(tokens.device))
        hidden = th.zeros(batch, self.transformer.dim, device=tokens.device)
        if context > 1:
            inputs = self.sequence_input(self.tokens_to_latent(tokens[:, :-1]), actions)
            out = self.transformer(inputs, segments[:, :-1], positions[:, :-1], cache)
            hidden = th.where(episode_starts[:, -1:], hidden, out[:, -1])
        # Imagined steps belong to the last step's episode and continue its positions.
        return ModelState(tokens[:, -1], hidden, self.config.latent_classes, cache, segments[:, -1:], positions[:, -1:])

    def step(self, state: ModelState, action: th.Tensor) -> ModelState:
        """One imagined transition: ``h_t`` from ``(z_t, a_t)`` through the cached sequence model, then
        ``z_{t+1}`` sampled from the prior ``p(z_{t+1} | h_t)``.

        Parameters
        ----------
        state : ModelState
            From :meth:`observe` (with ``horizon`` > 0) or a previous step; its cache is extended.
        action : th.Tensor
            ``(B,)`` indices or ``(B, A)`` scaled actions ``a_t``.
        """
        token = self.sequence_input(state.latents, action)[:, None]
        hidden = self.transformer(token, state.segment, state.position, state.cache)[:, 0]
        # In a differentiable dream z_{t+1} carries the straight-through gradient of its probabilities
        # (DreamerV2); elsewhere the sample alone, without building them.
        tokens, probs = self.prior.draw(hidden, probabilities=hidden.requires_grad)
        straight_through = None if probs is None else probs - probs.detach()
        return dataclasses.replace(
            state, tokens=tokens, hidden=hidden, position=state.position + 1, straight_through=straight_through
        )

    def dream(self, start: ModelState, horizon: int, policy: DreamPolicy | th.Tensor) -> ImaginedTrajectory:
        """Imagine ``horizon`` steps from ``start``.

        Parameters
        ----------
        start : ModelState
            From :meth:`observe` with room for ``horizon`` steps.
        horizon : int
            Imagined steps ``H``.
        policy : callable or th.Tensor
            A function of the state returning the raw action and the action the world model takes,
            or the actions themselves, ``(B, H)`` or ``(B, H, A)`` in [-1, 1] (open-loop prediction).

        Returns
        -------
        ImaginedTrajectory
        """
        states, raw_actions = [start], []
        for k in range(horizon):
            raw, action = (policy[:, k], policy[:, k]) if isinstance(policy, th.Tensor) else policy(states[-1])
            raw_actions.append(raw)
            states.append(self.step(states[-1], action))
        # Reward and continuation heads once over all steps: one large batch instead of H small ones.
        after = th.stack([s.hidden for s in states[1:]], 1)
        straight_through = None
        if any(s.straight_through is not None for s in states):  # the real start z_0 has none
            zero = th.zeros(*start.tokens.shape, self.config.latent_classes, device=start.tokens.device)
            straight_through = th.stack([zero if s.straight_through is None else s.straight_through for s in states], 1)
        return ImaginedTrajectory(
            tokens=th.stack([s.tokens for s in states], 1),
            hidden=th.cat([start.hidden[:, None], after], 1),
            num_classes=self.config.latent_classes,
            actions=th.stack(raw_actions, 1),
            rewards=self.reward(after),
            continues=self.continuation(after),
            straight_through=straight_through,
        )

    # ---------------------------------------------------------------------------------- loss
    def inference_hidden(self, inputs: th.Tensor, segments: th.Tensor, positions: th.Tensor, hidden: th.Tensor) -> th.Tensor:
        """``h`` of the sequence model in eval mode (no dropout), as acting and imagination compute it.

        Parameters
        ----------
        inputs : th.Tensor
            ``(B, L, K*C + action_dim)`` sequence inputs of the training pass.
        segments, positions : th.Tensor
            Long ``(B, L)``, as in that pass.
        hidden : th.Tensor
            ``(B, L, hidden_dim)``: that pass's output, returned detached when it had no active dropout.

        Returns
        -------
        th.Tensor
            ``(B, L, hidden_dim)``, without gradient.
        """
        if not (self.transformer.training and self.config.dropout > 0):
            return hidden.detach()
        self.transformer.eval()
        try:
            with th.no_grad():
                return self.transformer(inputs, segments, positions)
        finally:
            self.transformer.train()

    def loss(
        self,
        obs: th.Tensor,
        actions: th.Tensor,
        rewards: th.Tensor,
        terminated: th.Tensor,
        episode_starts: th.Tensor,
    ) -> WorldModelLoss:
        """World-model loss on a batch of replay windows.

        Parameters
        ----------
        obs : th.Tensor
            ``(B, L, *obs_shape)`` raw observations ``o_t``.
        actions : th.Tensor
            ``(B, L)`` action indices or ``(B, L, A)`` scaled actions ``a_t`` taken at ``o_t``.
        rewards, terminated : th.Tensor
            ``(B, L)``: reward and termination that followed ``a_t``.
        episode_starts : th.Tensor
            Bool ``(B, L)``: ``o_t`` is the first observation of an episode. No attention and no
            dynamics target crosses such a boundary.

        Returns
        -------
        WorldModelLoss
        """
        cfg = self.config
        lead, flat = self._flatten_obs(obs)
        x = self.preprocess(flat)
        post = unimix_log_probs(self.encoder(x).view(*lead, cfg.latent_tokens, cfg.latent_classes), cfg.unimix)
        latent = sample_one_hot(post)
        flat_latent = latent.flatten(-2)

        target = x if self.is_image else symlog(x)
        decoded = self.decoder(flat_latent.flatten(0, 1))
        if cfg.motion_weight:
            squared = F.mse_loss(decoded, target, reduction="none").view(*lead, *target.shape[1:])
            weights = motion_weights(target.view(squared.shape), episode_starts, cfg.motion_weight)
            reconstruction = (squared * weights).sum() / target.shape[0]
            reconstruction_error = squared.detach().sum() / target.shape[0]
        else:  # squared error summed over each observation, averaged over the steps (one fused kernel)
            reconstruction = F.mse_loss(decoded, target, reduction="sum") / target.shape[0]
            reconstruction_error = reconstruction.detach()

        segments, positions = segment_positions(episode_starts)
        inputs = self.sequence_input(flat_latent, actions)
        hidden = self.transformer(inputs, segments, positions)
        reward = self.twohot.loss(self.reward_head(hidden), rewards).mean()
        termination = F.binary_cross_entropy_with_logits(self.termination_head(hidden).squeeze(-1), terminated.float())

        # The prior at h_t predicts z_{t+1}; steps whose next observation starts a new episode have no target.
        tokens = latent.detach().argmax(-1)
        k = cfg.latent_tokens
        prior_hidden, next_tokens = hidden[:, :-1].reshape(-1, cfg.hidden_dim), tokens[:, 1:].reshape(-1, k)
        prior, token_mask = self.prior.training_log_probs(prior_hidden, tokens[:, :-1].reshape(-1, k), next_tokens)
        step_mask = ~episode_starts[:, 1:].reshape(-1)
        kl_tokens = token_mask if cfg.prior_kl_positions == "masked" else th.ones_like(token_mask)
        next_post = post[:, 1:].reshape(prior.shape)
        kl_dyn, kl_rep, kl = kl_balance(next_post, prior, kl_tokens, step_mask, cfg.kl_free_bits)

        imagination_kl = None
        if cfg.imagination_kl_orders > 0 and self.prior.kl_kind != "not_available":
            # A diagnostic: its random draws (a draft's decoding orders and posterior sample) come from a forked
            # stream, so that logging it does not change what is learned (as with the TensorBoard dreams).
            devices = [hidden.device] if hidden.device.type == "cuda" else []
            with th.no_grad(), th.random.fork_rng(devices=devices):
                eval_hidden = self.inference_hidden(inputs, segments, positions, hidden)[:, :-1].reshape(-1, cfg.hidden_dim)
                step_kl = self.prior.sampler_kl(next_post, eval_hidden, cfg.imagination_kl_orders)
                imagination_kl = (step_kl * step_mask).sum() / step_mask.sum().clamp(min=1)

        predicted = token_mask & step_mask[:, None]
        token_nll = -prior.gather(-1, next_tokens[..., None]).squeeze(-1)
        prior_token_ce = (token_nll * predicted).sum() / predicted.sum().clamp(min=1)

        total = (
            reconstruction
            + reward
            + termination
            + cfg.kl_dyn_coef * kl_dyn
            + cfg.kl_rep_coef * kl_rep
            + cfg.prior_ce_coef * prior_token_ce
        )
        return WorldModelLoss(
            total=total,
            reconstruction=reconstruction.detach(),
            reconstruction_error=reconstruction_error,
            reward=reward.detach(),
            termination=termination.detach(),
            kl_dynamics=kl_dyn.detach(),
            kl_representation=kl_rep.detach(),
            kl=kl,
            prior_token_ce=prior_token_ce.detach(),
            prior_mask_ratio=token_mask.float().mean(),
            imagination_kl=imagination_kl,
            tokens=tokens,
        )
