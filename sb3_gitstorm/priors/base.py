"""The interface every prior ``p(z_{t+1} | h_t)`` of the world model implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch as th
from torch import nn

from sb3_gitstorm.distributions import categorical_kl, entropy, sample_categorical, sample_unimix, unimix_log_probs


class LatentPrior(nn.Module, ABC):
    """Distribution of the next stochastic latent given the sequence model's output.

    The latent ``z`` is ``num_tokens`` categoricals of ``num_classes`` classes each; priors
    return normalised log-probabilities with the uniform mix already applied.

    Parameters
    ----------
    hidden_dim : int
        Size of ``h_t``.
    num_tokens, num_classes : int
        Shape of the categorical latent.
    unimix : float
        Uniform mix applied once to the output distribution.
    """

    def __init__(self, hidden_dim: int, num_tokens: int, num_classes: int, unimix: float) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_tokens = num_tokens
        self.num_classes = num_classes
        self.unimix = unimix

    @abstractmethod
    def log_probs(self, hidden: th.Tensor) -> th.Tensor:
        """One-shot distribution of ``z_{t+1}`` from ``h_t`` alone.

        Parameters
        ----------
        hidden : th.Tensor
            ``(N, hidden_dim)``.

        Returns
        -------
        th.Tensor
            Log-probabilities ``(N, num_tokens, num_classes)``.
        """

    @abstractmethod
    def training_log_probs(
        self,
        hidden: th.Tensor,
        current_tokens: th.Tensor,
        next_tokens: th.Tensor,
        generator: th.Generator | None = None,
    ) -> tuple[th.Tensor, th.Tensor]:
        """Prior log-probabilities used in the world-model loss, and the tokens they are trained on.

        Parameters
        ----------
        hidden : th.Tensor
            ``(N, hidden_dim)``: ``h_t``.
        current_tokens, next_tokens : th.Tensor
            Long ``(N, num_tokens)``: posterior samples of ``z_t`` and ``z_{t+1}``.
        generator : th.Generator, optional
            Random generator for the training mask.

        Returns
        -------
        tuple of th.Tensor
            Log-probabilities ``(N, num_tokens, num_classes)`` of ``z_{t+1}`` and a bool
            ``(N, num_tokens)`` mask of the tokens the prior was asked to predict.
        """

    @property
    def one_pass(self) -> bool:
        """Imagination samples every token in one pass from ``h_t`` alone (the distribution of :meth:`log_probs`)."""
        return True

    @property
    def kl_kind(self) -> str:
        """What :meth:`sampler_kl` and :meth:`sampler_entropy` give for the distribution :meth:`sample` draws from.

        - ``"exact"``: one-pass priors, whose samples are independent tokens with the :meth:`log_probs`
          distribution: the KL and the entropy in closed form;
        - ``"upper_bound"``: a stochastic estimate whose expectation is an upper bound
          (:meth:`sampler_log_prob` is a lower bound in expectation), tighter with more ``num_orders``;
        - ``"not_available"``: no tractable likelihood of the samples (e.g. MaskGIT's revise rounds); the
          methods raise a ValueError, and samples must be judged another way (e.g. decoded and checked).
        """
        return "exact" if self.one_pass else "not_available"

    def sampler_log_prob(
        self, hidden: th.Tensor, tokens: th.Tensor, num_orders: int = 1, generator: th.Generator | None = None
    ) -> th.Tensor:
        """``log p(tokens | h_t)`` under the distribution :meth:`sample` draws from.

        Exact for a one-pass prior (the sum of the tokens' :meth:`log_probs`); a prior that decodes in
        several passes overrides it (see :attr:`kl_kind`).

        Parameters
        ----------
        hidden : th.Tensor
            ``(N, hidden_dim)``: ``h_t``.
        tokens : th.Tensor
            Long ``(N, num_tokens)``: the latents to score.
        num_orders : int
            Random decoding orders to average over (priors whose sampler is a mixture over orders).
        generator : th.Generator, optional
            Random generator for the decoding orders.

        Returns
        -------
        th.Tensor
            ``(N,)`` log-probabilities (or their estimates), in nats.
        """
        if num_orders < 1:
            raise ValueError(f"num_orders must be >= 1, got {num_orders}")
        if self.kl_kind == "not_available":
            raise ValueError(
                f"{type(self).__name__}'s sampler has no tractable likelihood of its samples (kl_kind 'not_available')"
            )
        return self.log_probs(hidden).gather(-1, tokens[..., None]).squeeze(-1).sum(-1)

    def sampler_kl(
        self, posterior: th.Tensor, hidden: th.Tensor, num_orders: int = 1, generator: th.Generator | None = None
    ) -> th.Tensor:
        """``KL(q || p)`` over all tokens from a factorised posterior ``q`` to the distribution :meth:`sample` draws from.

        ``"exact"`` (:attr:`kl_kind`): the per-token KLs in closed form. ``"upper_bound"``:
        ``-H(q) - sampler_log_prob(z)`` with ``z`` drawn from ``q`` here; since ``sampler_log_prob`` is a lower
        bound in expectation, this is an upper bound in expectation. ``"not_available"``: a ValueError.

        Parameters
        ----------
        posterior : th.Tensor
            ``(N, num_tokens, num_classes)`` log-probabilities of ``q``.
        hidden : th.Tensor
            ``(N, hidden_dim)``: ``h_t``.
        num_orders, generator
            See :meth:`sampler_log_prob` (the generator also draws ``z``).

        Returns
        -------
        th.Tensor
            ``(N,)`` KLs (or their estimates), in nats.
        """
        posterior = posterior.float()
        if self.kl_kind == "exact":
            return categorical_kl(posterior, self.log_probs(hidden).float()).sum(-1)
        tokens = sample_categorical(posterior, generator)
        return -entropy(posterior).sum(-1) - self.sampler_log_prob(hidden, tokens, num_orders, generator)

    def sampler_entropy(self, hidden: th.Tensor, num_orders: int = 1, generator: th.Generator | None = None) -> th.Tensor:
        """Entropy of the joint distribution of all tokens that :meth:`sample` draws from.

        ``"exact"``: the sum of the tokens' entropies. ``"upper_bound"``: ``-sampler_log_prob(z)`` with ``z``
        drawn here by :meth:`sample`, at least the entropy in expectation. ``"not_available"``: a ValueError.
        The arguments are those of :meth:`sampler_kl` (the generator draws ``z``); returns ``(N,)`` entropies
        (or their estimates), in nats.
        """
        if self.kl_kind == "exact":
            return entropy(self.log_probs(hidden).float()).sum(-1)
        return -self.sampler_log_prob(hidden, self.sample(hidden, generator), num_orders, generator)

    def sample(self, hidden: th.Tensor, generator: th.Generator | None = None) -> th.Tensor:
        """Sample ``z_{t+1}`` given ``h_t`` ``(N, hidden_dim)`` for imagination: class indices, long ``(N, num_tokens)``."""
        return self.draw(hidden, generator)[0]

    @abstractmethod
    def draw(
        self, hidden: th.Tensor, generator: th.Generator | None = None, probabilities: bool = False
    ) -> tuple[th.Tensor, th.Tensor | None]:
        """:meth:`sample`, and with ``probabilities`` the distribution each token was drawn from.

        The probabilities keep their graph to ``h_t``: a differentiable dream builds DreamerV2's
        straight-through latent ``one_hot(z) + p - sg(p)`` from them.

        Parameters
        ----------
        hidden : th.Tensor
            ``(N, hidden_dim)``: ``h_t``.
        generator : th.Generator, optional
            Random generator; the tokens are the same draw with or without ``probabilities``.
        probabilities : bool
            Return the probabilities (with the uniform mix) too.

        Returns
        -------
        tuple of th.Tensor
            Class indices, long ``(N, num_tokens)``, and the probabilities ``(N, num_tokens, num_classes)``
            (None without ``probabilities``).
        """

    def draw_from(
        self, logits: th.Tensor, generator: th.Generator | None, probabilities: bool
    ) -> tuple[th.Tensor, th.Tensor | None]:
        """:meth:`draw` from logits ``(..., num_classes)`` before the uniform mix."""
        tokens = sample_unimix(logits, self.unimix, generator)
        return tokens, unimix_log_probs(logits, self.unimix).exp() if probabilities else None
