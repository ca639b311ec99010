"""The actor-critic trained on imagined trajectories (STORM / DreamerV3 style).

- Actor: a categorical with a uniform mix for Discrete actions; DreamerV3's bounded Normal for Box
  actions (mean ``tanh``-bounded to [-1, 1], samples clipped to it before they act).
- Critic: symlog two-hot over 255 bins, with a slow EMA copy that regularises it.
- Returns: lambda-returns bootstrapped from ``V(s_{t+1})``, continuation from the termination head.
- Advantages: divided by ``max(1, S)``, ``S`` an EMA of the 95th - 5th percentile of the returns.
- Actor loss (``actor_gradient``): REINFORCE with the normalised advantage, or, for Box actions,
  dynamics backpropagation of the normalised lambda-returns through the world model (DreamerV1/V2);
  minus an entropy bonus either way.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from sb3_gitstorm.config import ModelConfig
from sb3_gitstorm.distributions import SymlogTwoHot, sample_unimix, unimix_log_probs
from sb3_gitstorm.networks import mlp, scale_output_init
from sb3_gitstorm.world_model import ImaginedTrajectory


class Actor(nn.Module):
    """Policy over raw actions: class indices (Discrete) or unclipped Gaussian samples (Box).

    Box actions use DreamerV3's bounded Normal, ``Normal(tanh(mean), std)`` clipped to [-1, 1], not
    a tanh-squashed Normal: under a tanh squash every pre-squash mean beyond about 2 acts at the
    bound, so REINFORCE gets no signal that would bring such a mean back; a bounded mean keeps the
    deterministic action and the exploration noise where actions differ.

    Parameters
    ----------
    feature_dim : int
        Size of ``concat(z, h)``.
    action_space : spaces.Discrete or spaces.Box
        Box actions are produced in [-1, 1] (the policy rescales them to the bounds).
    hidden, layers : int
        MLP width and depth.
    unimix : float
        Uniform mix of the categorical (Discrete only).
    std_range : tuple of float
        ``(min, max)`` of the Gaussian standard deviation (Box only).
    output_scale : float
        Multiplier of the output layer's initial weights (its bias starts at zero).
    latent_shape : tuple of int, optional
        ``(K, C)`` when ``features`` start with ``K`` one-hot blocks of ``C`` classes (the latent
        ``z``): the first layer then exploits it (:class:`~sb3_gitstorm.networks.OneHotLinear`).
    """

    def __init__(
        self,
        feature_dim: int,
        action_space: spaces.Space,
        hidden: int,
        layers: int,
        unimix: float,
        std_range: tuple[float, float],
        output_scale: float = 1.0,
        latent_shape: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.action_dim = spaces.flatdim(action_space)  # classes, or the 1-D Box's size
        self.unimix, (self.min_std, self.max_std) = unimix, std_range
        out_dim = self.action_dim if self.discrete else 2 * self.action_dim
        self.net = scale_output_init(mlp(feature_dim, out_dim, hidden, layers, latent_shape), output_scale)

    def distribution(self, features: th.Tensor) -> Distribution:
        """Distribution over raw actions given features ``(..., F)``; ``log_prob`` and ``entropy`` have shape ``(...)``."""
        out = self.net(features).float()
        if self.discrete:
            return Categorical(logits=unimix_log_probs(out, self.unimix), validate_args=False)
        mean, std = out.chunk(2, -1)
        std = (self.max_std - self.min_std) * th.sigmoid(std + 2.0) + self.min_std
        return Independent(Normal(th.tanh(mean), std, validate_args=False), 1, validate_args=False)

    def act(self, features: th.Tensor, deterministic: bool = False, reparameterize: bool = False) -> th.Tensor:
        """Raw actions for features ``(..., F)``: indices ``(...)`` or unclipped vectors ``(..., A)``
        (with ``reparameterize``, differentiable samples ``mean + std * noise``)."""
        if self.discrete:
            logits = self.net(features)
            return logits.argmax(-1) if deterministic else sample_unimix(logits, self.unimix)
        dist = self.distribution(features)
        if deterministic:
            return dist.mean
        return dist.rsample() if reparameterize else dist.sample()

    def squash(self, raw_actions: th.Tensor) -> th.Tensor:
        """Raw actions to what the world model and the environment take: indices, or clipped to [-1, 1]."""
        return raw_actions if self.discrete else raw_actions.clamp(-1.0, 1.0)


class Critic(nn.Module):
    """State value as a symlog two-hot distribution over ``bins`` bins."""

    def __init__(
        self,
        feature_dim: int,
        hidden: int,
        layers: int,
        bins: int,
        bin_range: tuple[float, float],
        latent_shape: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.net = scale_output_init(mlp(feature_dim, bins, hidden, layers, latent_shape), 0.0)
        self.twohot = SymlogTwoHot(bins, *bin_range)

    def forward(self, features: th.Tensor) -> th.Tensor:
        """Logits over the bins, ``(..., bins)``."""
        return self.net(features)

    def value(self, features: th.Tensor) -> th.Tensor:
        """Expected value, shape ``(...)``."""
        return self.twohot.mean(self(features))


ACTOR_GRADIENTS = ("reinforce", "dynamics")


def check_actor_gradient(actor_gradient: str, action_space: spaces.Space) -> None:
    """Raise a ValueError unless ``actor_gradient`` is one of :data:`ACTOR_GRADIENTS` and fits ``action_space``."""
    if actor_gradient not in ACTOR_GRADIENTS:
        raise ValueError(f"actor_gradient must be one of {ACTOR_GRADIENTS}, got {actor_gradient!r}")
    if actor_gradient == "dynamics" and isinstance(action_space, spaces.Discrete):
        raise ValueError("actor_gradient='dynamics' needs Box actions: sampled discrete actions carry no gradient")


def lambda_returns(rewards: th.Tensor, continues: th.Tensor, values: th.Tensor, gamma: float, lam: float) -> th.Tensor:
    """TD(lambda) returns ``R_t = r_t + gamma c_t ((1 - lam) V(s_{t+1}) + lam R_{t+1})``, ``R_H = V(s_H)``.

    Parameters
    ----------
    rewards, continues : th.Tensor
        ``(B, H)``.
    values : th.Tensor
        ``(B, H + 1)``: ``V(s_0) .. V(s_H)``.

    Returns
    -------
    th.Tensor
        ``(B, H)``.
    """
    ret = values[:, -1]
    returns = []
    for t in reversed(range(rewards.shape[1])):
        ret = rewards[:, t] + gamma * continues[:, t] * ((1.0 - lam) * values[:, t + 1] + lam * ret)
        returns.append(ret)
    return th.stack(returns[::-1], 1)


class ReturnNormalizer(nn.Module):
    """EMA ``S`` of the spread between two percentiles of the returns; advantages are divided by ``max(1, S)``.

    The statistic is a buffer, so it is saved and restored with the policy.

    Parameters
    ----------
    decay : float
        EMA decay.
    percentiles : tuple of float
        ``(low, high)`` quantiles in [0, 1].
    """

    scale: th.Tensor

    def __init__(self, decay: float, percentiles: tuple[float, float]) -> None:
        super().__init__()
        self.decay, (self.low, self.high) = decay, percentiles
        self.register_buffer("scale", th.zeros(()))

    @th.no_grad()
    def update(self, returns: th.Tensor) -> th.Tensor:
        """Fold a batch of returns into the statistic and return the divisor ``max(1, S)``."""
        flat = returns.detach().float().flatten()
        spread = th.quantile(flat, self.high) - th.quantile(flat, self.low)
        self.scale.mul_(self.decay).add_((1.0 - self.decay) * spread)
        return self.scale.clamp(min=1.0)


class ActorCriticLoss(NamedTuple):
    """Losses of one update and detached statistics for logging."""

    actor: th.Tensor
    critic: th.Tensor
    entropy: th.Tensor
    return_scale: th.Tensor
    mean_return: th.Tensor
    mean_value: th.Tensor

    def terms(self) -> dict[str, th.Tensor]:
        """The trained losses and the return scale they are normalised by, by their log names (``train/<name>``)."""
        return {"actor_loss": self.actor, "critic_loss": self.critic, "return_scale": self.return_scale}

    def logs(self) -> dict[str, float]:
        """:meth:`terms` and the statistics, as floats."""
        statistics = {"entropy": self.entropy, "imagined_return": self.mean_return, "imagined_value": self.mean_value}
        return {name: value.item() for name, value in (self.terms() | statistics).items()}


class ActorCritic(nn.Module):
    """Actor, critic, its slow target and the return normaliser.

    Parameters
    ----------
    config : ModelConfig
        Sizes (``ac_hidden``, ``ac_layers``, ``reward_bins``, the latent) and the actor, critic and
        return-normalisation settings.
    action_space : spaces.Discrete or spaces.Box
    """

    def __init__(self, config: ModelConfig, action_space: spaces.Space) -> None:
        super().__init__()
        dim, hidden, layers = config.feature_dim, config.ac_hidden, config.ac_layers
        actor_init = (config.unimix, config.actor_std_range, config.actor_output_scale)
        self.actor = Actor(dim, action_space, hidden, layers, *actor_init, config.latent_shape)
        self.critic = Critic(dim, hidden, layers, config.reward_bins, config.twohot_range, config.latent_shape)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.normalizer = ReturnNormalizer(config.return_decay, config.return_percentiles)

    def loss(
        self, traj: ImaginedTrajectory, gamma: float, lam: float, ent_coef: float, dynamics: bool = False
    ) -> ActorCriticLoss:
        """Actor and critic losses on imagined trajectories.

        States after a predicted termination weigh less: each step is weighted by the probability
        that the trajectory is still alive when it is reached.

        With ``dynamics`` the trajectory carries the graph from its actions (a differentiable dream) and
        the actor maximises the normalised lambda-returns themselves, bootstrapped from the slow critic
        (whose weights take no gradient); otherwise the trajectory carries no gradient and the actor
        follows REINFORCE. The critic learns on detached features either way.
        """
        features = traj.features.detach()
        logits = self.critic(features)
        twohot = self.critic.twohot
        with th.no_grad():
            values = twohot.mean(logits)
            returns = lambda_returns(traj.rewards, traj.continues, values, gamma, lam)
            scale = self.normalizer.update(returns)
            advantages = (returns - values[:, :-1]) / scale
            alive = th.cat([th.ones_like(traj.continues[:, :1]), traj.continues[:, :-1]], 1).cumprod(1)
            slow_values = self.target_critic.value(features)[:, :-1]

        dist = self.actor.distribution(features[:, :-1])
        entropy = dist.entropy()
        if dynamics:
            slow = self.target_critic.value(traj.features)
            objective = lambda_returns(traj.rewards, traj.continues, slow, gamma, lam) / scale
        else:
            objective = advantages * dist.log_prob(traj.actions)
        actor = -(alive * (objective + ent_coef * entropy)).mean()

        log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
        critic_nll = twohot.loss(logits, returns, log_probs) + twohot.loss(logits, slow_values, log_probs)
        critic = (alive * critic_nll).mean()
        return ActorCriticLoss(
            actor=actor,
            critic=critic,
            entropy=entropy.mean().detach(),
            return_scale=scale,
            mean_return=returns.mean(),
            mean_value=values.mean(),
        )

    @th.no_grad()
    def update_target(self, tau: float) -> None:
        """Polyak update of the slow critic: ``target <- (1 - tau) target + tau critic``."""
        for target, online in zip(self.target_critic.parameters(), self.critic.parameters(), strict=True):
            target.lerp_(online, tau)
