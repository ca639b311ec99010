"""GIT-STORM's prior: a MaskGIT masked generative transformer over the latent tokens.

``p(z_{t+1} | h_t)`` is modelled by a small *bidirectional* transformer over the
``num_tokens`` categorical tokens of the latent, conditioned on ``h_t``:

- each token's embedding (vocabulary: the real classes + one ``[MASK]`` token) is concatenated
  with its own chunk of ``h_t`` (``h_t`` is cut into ``num_tokens`` equal chunks) and projected
  back to the model width;
- the output head is weight-tied to the token embedding:
  ``logits = LN(GELU(W x)) @ E^T + b`` over the real classes, then the uniform mix (once).

Training masks ``max(1, floor(cos(pi/2 * u) * num_tokens))`` random tokens, ``u ~ U(0, 1)`` per
sample, and the world model takes its KL terms on the masked positions. Imagination decodes with
draft-and-revise: fill the tokens chunk by chunk from all-``[MASK]``, then re-mask and re-sample
chunks given the rest.
"""

from __future__ import annotations

import math

import torch as th
import torch.nn.functional as F
from torch import nn

from sb3_gitstorm.distributions import sample_unimix, unimix_log_probs
from sb3_gitstorm.priors.base import LatentPrior
from sb3_gitstorm.transformer import Block


def random_chunks(
    batch: int, num_tokens: int, num_chunks: int, device: th.device, generator: th.Generator | None = None
) -> th.Tensor:
    """Split each row's positions into ``num_chunks`` random chunks of (almost) equal size.

    Returns
    -------
    th.Tensor
        Long ``(batch, num_tokens)``: the chunk index of every position, in ``[0, num_chunks)``.
    """
    if not 1 <= num_chunks <= num_tokens:
        raise ValueError(f"the number of chunks must be in [1, {num_tokens}], got {num_chunks}")
    rank = th.rand(batch, num_tokens, device=device, generator=generator).argsort(-1).argsort(-1)
    return rank * num_chunks // num_tokens


def cosine_mask(batch: int, num_tokens: int, device: th.device, generator: th.Generator | None = None) -> th.Tensor:
    """MaskGIT's training mask: ``max(1, floor(cos(pi/2 * u) * num_tokens))`` random positions per row.

    Returns
    -------
    th.Tensor
        Bool ``(batch, num_tokens)``, True at masked positions.
    """
    u = th.rand(batch, device=device, generator=generator)
    n_masked = (th.cos(0.5 * math.pi * u) * num_tokens).floor().clamp(min=1).long()
    rank = th.rand(batch, num_tokens, device=device, generator=generator).argsort(-1).argsort(-1)
    return rank < n_masked[:, None]


class MaskGITPrior(LatentPrior):
    """Bidirectional masked transformer prior with draft-and-revise sampling.

    Parameters
    ----------
    hidden_dim, num_tokens, num_classes, unimix
        See :class:`~sb3_gitstorm.priors.base.LatentPrior`; ``hidden_dim`` must be a multiple
        of ``num_tokens``.
    dim, layers, heads, ffn_dim : int
        Width, depth, heads and feed-forward width of the transformer (paper: 128, 4, 8, 128).
    visible : str
        Which latent provides the unmasked tokens in training: ``"current"`` (``z_t``, the
        authors' code) or ``"next"`` (``z_{t+1}``, textbook MaskGIT).
    """

    def __init__(
        self,
        hidden_dim: int,
        num_tokens: int,
        num_classes: int,
        unimix: float,
        dim: int = 128,
        layers: int = 4,
        heads: int = 8,
        ffn_dim: int = 128,
        visible: str = "current",
    ) -> None:
        super().__init__(hidden_dim, num_tokens, num_classes, unimix)
        if hidden_dim % num_tokens != 0:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be a multiple of num_tokens ({num_tokens})")
        self.mask_id = num_classes
        self.visible = visible
        self.chunk = hidden_dim // num_tokens
        self.token_embed = nn.Embedding(num_classes + 1, dim)
        self.position = nn.Parameter(th.randn(num_tokens, dim) * 0.02)
        self.cond_proj = nn.Linear(dim + self.chunk, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, ffn_dim, dropout=0.0) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, dim)
        self.head_norm = nn.LayerNorm(dim)
        self.bias = nn.Parameter(th.zeros(num_classes))

    def embed(self, hidden: th.Tensor, tokens: th.Tensor) -> th.Tensor:
        """Transformer input ``cond_proj(concat(E[token], chunk of h_t)) + position``, ``(N, num_tokens, dim)``.

        Computed without the concatenation: the embedding table goes through its part of
        ``cond_proj`` once (``(C + 1) x dim`` instead of once per token) and is then gathered;
        only the ``h_t`` chunks are projected per token. The same function, 7x fewer operations.
        """
        weight = self.cond_proj.weight
        split = weight.shape[1] - self.chunk
        table = F.linear(self.token_embed.weight, weight[:, :split], self.cond_proj.bias)
        cond = hidden.reshape(hidden.shape[0], self.num_tokens, self.chunk).to(self.position.dtype)
        return F.linear(cond, weight[:, split:]) + (F.embedding(tokens, table) + self.position)

    def logits(self, hidden: th.Tensor, tokens: th.Tensor) -> th.Tensor:
        """Logits (before the uniform mix) of every token given ``h_t`` and the partially masked tokens.

        Parameters
        ----------
        hidden : th.Tensor
            ``(N, hidden_dim)``.
        tokens : th.Tensor
            Long ``(N, num_tokens)``, with ``self.mask_id`` at masked positions.

        Returns
        -------
        th.Tensor
            ``(N, num_tokens, num_classes)``.
        """
        x = self.embed(hidden, tokens)
        for block in self.blocks:
            x = block(x)
        x = self.head_norm(F.gelu(self.head(self.norm(x))))
        return x @ self.token_embed.weight[: self.num_classes].T + self.bias

    def forward(self, hidden: th.Tensor, tokens: th.Tensor) -> th.Tensor:
        """Log-probabilities ``(N, num_tokens, num_classes)`` with the uniform mix; see :meth:`logits`."""
        return unimix_log_probs(self.logits(hidden, tokens), self.unimix)

    def _masked(self, batch: int, device: th.device) -> th.Tensor:
        return th.full((batch, self.num_tokens), self.mask_id, dtype=th.long, device=device)

    def log_probs(self, hidden: th.Tensor) -> th.Tensor:
        return self(hidden, self._masked(hidden.shape[0], hidden.device))

    def training_log_probs(
        self,
        hidden: th.Tensor,
        current_tokens: th.Tensor,
        next_tokens: th.Tensor,
        generator: th.Generator | None = None,
    ) -> tuple[th.Tensor, th.Tensor]:
        visible = current_tokens if self.visible == "current" else next_tokens
        mask = cosine_mask(visible.shape[0], self.num_tokens, hidden.device, generator)
        return self(hidden, visible.masked_fill(mask, self.mask_id)), mask

    def resample(
        self, hidden: th.Tensor, tokens: th.Tensor, positions: th.Tensor, generator: th.Generator | None = None
    ) -> th.Tensor:
        """Re-mask ``positions`` and sample them given ``h_t`` and the other tokens; nothing else changes.

        Parameters
        ----------
        hidden : th.Tensor
            ``(N, hidden_dim)``.
        tokens : th.Tensor
            Long ``(N, num_tokens)``: current tokens (``mask_id`` where not yet decoded).
        positions : th.Tensor
            Bool ``(N, num_tokens)``: the positions to (re-)sample.

        Returns
        -------
        th.Tensor
            Long ``(N, num_tokens)``.
        """
        logits = self.logits(hidden, tokens.masked_fill(positions, self.mask_id))
        return th.where(positions, sample_unimix(logits, self.unimix, generator), tokens)

    def revise(self, hidden: th.Tensor, tokens: th.Tensor, num_chunks: int, generator: th.Generator | None = None) -> th.Tensor:
        """One pass of chunked decoding: :meth:`resample` each of ``num_chunks`` random chunks in turn.

        Starting from all-``[MASK]`` this is the draft (each chunk is sampled given the chunks
        already filled); starting from a sample it is one revise round.

        Returns
        -------
        th.Tensor
            Long ``(N, num_tokens)``.
        """
        chunks = random_chunks(tokens.shape[0], self.num_tokens, num_chunks, tokens.device, generator)
        for i in range(num_chunks):
            tokens = self.resample(hidden, tokens, chunks == i, generator)
        return tokens

    def sample(
        self,
        hidden: th.Tensor,
        draft_steps: int = 1,
        revise_steps: int = 1,
        revise_rounds: int = 1,
        generator: th.Generator | None = None,
    ) -> th.Tensor:
        if revise_rounds >= 1 and revise_steps == 1:
            # A one-chunk revise re-masks every position, so the draft and all earlier rounds are
            # discarded: a single all-[MASK] pass has exactly the same distribution.
            logits = self.logits(hidden, self._masked(hidden.shape[0], hidden.device))
            return sample_unimix(logits, self.unimix, generator)
        tokens = self.revise(hidden, self._masked(hidden.shape[0], hidden.device), draft_steps, generator)
        for _ in range(revise_rounds):
            tokens = self.revise(hidden, tokens, revise_steps, generator)
        return tokens
