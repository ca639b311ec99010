"""The interface every prior ``p(z_{t+1} | h_t)`` of the world model implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch as th
from torch import nn

from sb3_gitstorm.distributions import sample_unimix, unimix_log_probs


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

    def imagination_log_probs(self, hidden: th.Tensor, tokens: th.Tensor, generator: th.Generator | None = None) -> th.Tensor:
        """Log-probabilities of ``z_{t+1}`` as imagination samples it, teacher-forced with ``tokens``.

        For a one-pass prior this is :meth:`log_probs`; a prior that decodes tokens in several passes
        conditions each token on ``tokens`` where sampling would condition on its own earlier draws.

        Parameters
        ----------
        hidden : th.Tensor
            ``(N, hidden_dim)``: ``h_t``.
        tokens : th.Tensor
            Long ``(N, num_tokens)``: a sample of ``z_{t+1}`` (e.g. the posterior's).
        generator : th.Generator, optional
            Random generator for the decoding order.

        Returns
        -------
        th.Tensor
            Log-probabilities ``(N, num_tokens, num_classes)``; their KL from the posterior summed over
            the tokens is the all-token KL of imagination.
        """
        return self.log_probs(hidden)

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
