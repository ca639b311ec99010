"""STORM's prior: one linear layer from ``h_t`` to independent categoricals."""

from __future__ import annotations

import torch as th
from torch import nn

from sb3_gitstorm.distributions import unimix_log_probs
from sb3_gitstorm.priors.base import LatentPrior


class MLPPrior(LatentPrior):
    """``p(z_{t+1} | h_t)`` as ``num_tokens`` independent categoricals from a linear map of ``h_t``.

    All tokens are drawn in one shot, independently given ``h_t``; this is the baseline the
    MaskGIT prior replaces (``prior="mlp"`` gives plain STORM).
    """

    def __init__(self, hidden_dim: int, num_tokens: int, num_classes: int, unimix: float) -> None:
        super().__init__(hidden_dim, num_tokens, num_classes, unimix)
        self.head = nn.Linear(hidden_dim, num_tokens * num_classes)

    def logits(self, hidden: th.Tensor) -> th.Tensor:
        """Logits (before the uniform mix), ``(N, num_tokens, num_classes)``."""
        return self.head(hidden).view(*hidden.shape[:-1], self.num_tokens, self.num_classes)

    def log_probs(self, hidden: th.Tensor) -> th.Tensor:
        return unimix_log_probs(self.logits(hidden), self.unimix)

    def training_log_probs(
        self,
        hidden: th.Tensor,
        current_tokens: th.Tensor,
        next_tokens: th.Tensor,
        generator: th.Generator | None = None,
    ) -> tuple[th.Tensor, th.Tensor]:
        mask = th.ones(next_tokens.shape, dtype=th.bool, device=hidden.device)
        return self.log_probs(hidden), mask

    def draw(
        self, hidden: th.Tensor, generator: th.Generator | None = None, probabilities: bool = False
    ) -> tuple[th.Tensor, th.Tensor | None]:
        return self.draw_from(self.logits(hidden), generator, probabilities)
