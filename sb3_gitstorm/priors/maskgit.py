"""GIT-STORM's prior: a MaskGIT masked generative transformer over the latent tokens.

``p(z_{t+1} | h_t)`` is modelled by a small *bidirectional* transformer over the
``num_tokens`` categorical tokens of the latent, conditioned on ``h_t``:

- each token's embedding (vocabulary: the real classes + one ``[MASK]`` token) is concatenated
  with its own chunk of ``h_t`` (``h_t`` is cut into ``num_tokens`` equal chunks) and projected
  back to the model width;
- the output head is weight-tied to the token embedding:
  ``logits = LN(GELU(W x)) @ E^T + b`` over the real classes, then the uniform mix (once).

Imagination decodes with draft-and-revise (:class:`DecodeSchedule`): fill the tokens chunk by chunk
from all-``[MASK]``, then re-mask and re-sample chunks given the rest. Training masks random tokens
of ``z_{t+1}`` and the world model takes its KL terms on the masked positions; how many tokens are
masked is the *training schedule* (``ModelConfig.maskgit_schedule``):

- ``"decode"`` (default): each row is masked like one pass of the decoding schedule, drawn uniformly,
  so the prior is trained on exactly the inputs imagination gives it. With the paper's 1/1/1
  schedule imagination samples every latent from all-``[MASK]``, and so is every training row.
- ``"cosine"``: MaskGIT's ``ceil(cos(pi/2 * u) * K)`` tokens, ``u ~ U(0, 1)``; a share
  ``(2/pi) * acos((K-1)/K)`` of the rows is all-masked (16% at K = 32, 32% at K = 8).
- ``"reference"``: the released GIT-STORM code: ``max(1, floor(cos(pi/2 * u) * K))`` tokens masked,
  and the other tokens shown are those of ``z_t`` (not ``z_{t+1}``); all-masked rows (what imagination
  samples from) occur only at ``u = 0``, i.e. practically never.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch as th
import torch.nn.functional as F
from torch import nn

from sb3_gitstorm.distributions import unimix_log_probs
from sb3_gitstorm.priors.base import LatentPrior
from sb3_gitstorm.transformer import Block

INIT_STD = 0.02  # MaskGIT's truncated-normal initialiser for embeddings and linear layers


@dataclass(frozen=True)
class DecodeSchedule:
    """Draft-and-revise decoding: ``draft_steps`` chunks filled in turn from all-``[MASK]``, then
    ``revise_rounds`` rounds that each re-mask and re-sample ``revise_steps`` chunks one at a time.

    The paper's default (1, 1, 1) re-draws everything in its one-chunk revise, so one all-``[MASK]``
    pass has the same distribution: :attr:`passes` returns only the passes that matter.
    """

    draft_steps: int = 1
    revise_steps: int = 1
    revise_rounds: int = 1

    def check(self, num_tokens: int) -> None:
        """Raise a ValueError naming the setting that does not fit ``num_tokens`` latent tokens."""
        for name, value in (("draft_steps", self.draft_steps), ("revise_steps", self.revise_steps)):
            if not 1 <= value <= num_tokens:
                raise ValueError(f"{name} must be in [1, {num_tokens}] (the latent tokens), got {value}")
        if self.revise_rounds < 0:
            raise ValueError(f"revise_rounds must be >= 0, got {self.revise_rounds}")

    @property
    def one_pass(self) -> bool:
        """A one-chunk revise (or a one-chunk draft alone) samples every token in one all-``[MASK]`` pass."""
        return (self.revise_rounds >= 1 and self.revise_steps == 1) or (self.revise_rounds == 0 and self.draft_steps == 1)

    def passes(self, num_tokens: int) -> list[int]:
        """Masked tokens at each network call of one decoding, in order.

        Chunk ``i`` of ``n`` holds the positions of rank ``[ceil(i K / n), ceil((i + 1) K / n))``
        (:func:`random_chunks`): the ``i``-th draft call sees the earlier chunks, a revise call sees
        every chunk but its own.
        """
        if self.one_pass:
            return [num_tokens]

        def start(i: int, n: int) -> int:
            return -(-i * num_tokens // n)

        draft = [num_tokens - start(i, self.draft_steps) for i in range(self.draft_steps)]
        revise = [start(i + 1, self.revise_steps) - start(i, self.revise_steps) for i in range(self.revise_steps)]
        return draft + revise * self.revise_rounds


PAPER_DECODE = DecodeSchedule()  # T_draft = T_revise = M = 1


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


def masked_counts(
    schedule: str, batch: int, num_tokens: int, decode: DecodeSchedule, device: th.device, generator: th.Generator | None = None
) -> th.Tensor:
    """Number of masked tokens of each training row under a training ``schedule`` (see the module docstring).

    Returns
    -------
    th.Tensor
        Long ``(batch,)``, each in ``[1, num_tokens]``.
    """
    if schedule == "decode":
        passes = th.tensor(decode.passes(num_tokens), device=device)
        return passes[th.randint(len(passes), (batch,), device=device, generator=generator)]
    ratio = th.cos(0.5 * math.pi * th.rand(batch, device=device, generator=generator)) * num_tokens
    if schedule == "cosine":
        return ratio.ceil().clamp(1, num_tokens).long()
    if schedule == "reference":
        return ratio.floor().clamp(1, num_tokens).long()
    raise ValueError(f"unknown MaskGIT training schedule {schedule!r}")


def training_mask(
    schedule: str, batch: int, num_tokens: int, decode: DecodeSchedule, device: th.device, generator: th.Generator | None = None
) -> th.Tensor:
    """Random training mask with :func:`masked_counts` masked positions per row.

    Returns
    -------
    th.Tensor
        Bool ``(batch, num_tokens)``, True at masked positions.
    """
    counts = masked_counts(schedule, batch, num_tokens, decode, device, generator)
    rank = th.rand(batch, num_tokens, device=device, generator=generator).argsort(-1).argsort(-1)
    return rank < counts[:, None]


class MaskGITPrior(LatentPrior):
    """Bidirectional masked transformer prior with draft-and-revise sampling.

    Parameters
    ----------
    hidden_dim, num_tokens, num_classes, unimix
        See :class:`~sb3_gitstorm.priors.base.LatentPrior`; ``hidden_dim`` must be a multiple
        of ``num_tokens``.
    dim, layers, heads, ffn_dim : int
        Width, depth, heads and feed-forward width of the transformer (paper: 128, 4, 8, 128).
    schedule : str
        Training schedule: ``"decode"``, ``"cosine"`` or ``"reference"`` (module docstring).
    decode : DecodeSchedule
        Draft-and-revise schedule of :meth:`sample` (paper: 1, 1, 1).
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
        schedule: str = "decode",
        decode: DecodeSchedule = PAPER_DECODE,
    ) -> None:
        super().__init__(hidden_dim, num_tokens, num_classes, unimix)
        if hidden_dim % num_tokens != 0:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be a multiple of num_tokens ({num_tokens})")
        decode.check(num_tokens)
        if schedule == "reference" and not decode.one_pass:
            warnings.warn(
                "draft-and-revise with several chunks conditions the MaskGIT prior on tokens of z_{t+1}, but "
                "maskgit_schedule='reference' (the authors' code) trains it with tokens of z_t visible; "
                "the default maskgit_schedule='decode' trains it the way it decodes",
                stacklevel=2,
            )
        self.mask_id = num_classes
        self.schedule, self.decode = schedule, decode
        self.chunk = hidden_dim // num_tokens
        self.token_embed = nn.Embedding(num_classes + 1, dim)
        self.position = nn.Parameter(th.empty(num_tokens, dim))
        self.cond_proj = nn.Linear(dim + self.chunk, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, ffn_dim, dropout=0.0) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, dim)
        self.head_norm = nn.LayerNorm(dim)
        self.bias = nn.Parameter(th.zeros(num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MaskGIT's initialisation: truncated normal (std 0.02) embeddings and linear weights, zero biases.

        With PyTorch's defaults (``N(0, 1)`` embeddings, which the tied output layer reuses) the
        initial logits have a standard deviation of about ``sqrt(dim)``: the untrained prior would be
        nearly one-hot on random classes and pull the posterior towards them through the KL.
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(module.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.position, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
        nn.init.zeros_(self.bias)

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

    @property
    def one_pass(self) -> bool:
        return self.decode.one_pass

    def training_log_probs(
        self,
        hidden: th.Tensor,
        current_tokens: th.Tensor,
        next_tokens: th.Tensor,
        generator: th.Generator | None = None,
    ) -> tuple[th.Tensor, th.Tensor]:
        visible = current_tokens if self.schedule == "reference" else next_tokens
        mask = training_mask(self.schedule, visible.shape[0], self.num_tokens, self.decode, hidden.device, generator)
        return self(hidden, visible.masked_fill(mask, self.mask_id)), mask

    @property
    def kl_kind(self) -> str:
        """``"exact"`` for the one-pass schedules, ``"upper_bound"`` for a draft alone (``revise_rounds=0``),
        ``"not_available"`` with revise rounds: re-sampling chunks given all other tokens is a Markov chain
        whose result has no closed-form likelihood (see :meth:`sampler_log_prob`)."""
        if self.one_pass:
            return "exact"
        return "not_available" if self.decode.revise_rounds else "upper_bound"

    def sampler_log_prob(
        self, hidden: th.Tensor, tokens: th.Tensor, num_orders: int = 1, generator: th.Generator | None = None
    ) -> th.Tensor:
        """``log p(tokens | h_t)`` of the draft, a mixture over decoding orders, as a log-mean-exp over ``num_orders`` orders.

        A draft of ``T`` chunks in a random order ``o`` (:func:`random_chunks`) draws
        ``p_o(z) = prod_i p(z_{chunk i} | h_t, z_{chunks < i})``, so its samples follow
        ``p(z) = E_o p_o(z)``. With ``o_1 .. o_M`` drawn independently, ``log mean_j p_{o_j}(z)`` is at most
        ``log p(z)`` in expectation (Jensen) and rises towards it with ``M`` (``M = 1``: the chain rule of one
        order, the bound the order-averaged KL gives). Costs ``T * num_orders`` network calls on
        ``N * num_orders`` rows. One-pass schedules: exact; revise rounds: a ValueError (:attr:`kl_kind`).
        """
        if self.kl_kind == "not_available":
            raise ValueError(
                f"MaskGIT decoding with revise rounds ({self.decode}) has no tractable likelihood of its samples: "
                "each round re-samples chunks given all other tokens (kl_kind 'not_available'); judge its samples instead"
            )
        if self.kl_kind == "exact" or num_orders < 1:  # the base class scores one pass and checks num_orders
            return super().sampler_log_prob(hidden, tokens, num_orders, generator)
        steps = self.decode.draft_steps
        rows_hidden, rows_tokens = hidden.repeat(num_orders, 1), tokens.repeat(num_orders, 1)
        chunks = random_chunks(rows_tokens.shape[0], self.num_tokens, steps, tokens.device, generator)
        log_prob = th.zeros(rows_tokens.shape[0], device=hidden.device)
        for i in range(steps):
            log_probs = self(rows_hidden, rows_tokens.masked_fill(chunks >= i, self.mask_id))
            token_log_probs = log_probs.gather(-1, rows_tokens[..., None]).squeeze(-1)
            log_prob = log_prob + th.where(chunks == i, token_log_probs, 0.0).sum(-1)
        return th.logsumexp(log_prob.view(num_orders, -1), 0) - math.log(num_orders)

    def resample(
        self,
        hidden: th.Tensor,
        tokens: th.Tensor,
        positions: th.Tensor,
        generator: th.Generator | None = None,
        probs: th.Tensor | None = None,
    ) -> tuple[th.Tensor, th.Tensor | None]:
        """Re-mask ``positions`` and sample them given ``h_t`` and the other tokens; nothing else changes.

        Parameters
        ----------
        hidden : th.Tensor
            ``(N, hidden_dim)``.
        tokens : th.Tensor
            Long ``(N, num_tokens)``: current tokens (``mask_id`` where not yet decoded).
        positions : th.Tensor
            Bool ``(N, num_tokens)``: the positions to (re-)sample.
        generator : th.Generator, optional
            Random generator.
        probs : th.Tensor, optional
            ``(N, num_tokens, num_classes)``: the distribution each current token was drawn from
            (see :meth:`draw`); ``positions`` get the ones of this pass.

        Returns
        -------
        tuple of th.Tensor
            Long ``(N, num_tokens)`` tokens, and the updated ``probs`` (None without ``probs``).
        """
        logits = self.logits(hidden, tokens.masked_fill(positions, self.mask_id))
        drawn, drawn_probs = self.draw_from(logits, generator, probs is not None)
        tokens = th.where(positions, drawn, tokens)
        if probs is None or drawn_probs is None:
            return tokens, None
        return tokens, th.where(positions[..., None], drawn_probs, probs)

    def revise(
        self,
        hidden: th.Tensor,
        tokens: th.Tensor,
        num_chunks: int,
        generator: th.Generator | None = None,
        probs: th.Tensor | None = None,
    ) -> tuple[th.Tensor, th.Tensor | None]:
        """One pass of chunked decoding: :meth:`resample` each of ``num_chunks`` random chunks in turn.

        Starting from all-``[MASK]`` this is the draft (each chunk is sampled given the chunks
        already filled); starting from a sample it is one revise round.

        Returns
        -------
        tuple of th.Tensor
            Long ``(N, num_tokens)`` tokens, and ``probs`` updated as in :meth:`resample`.
        """
        chunks = random_chunks(tokens.shape[0], self.num_tokens, num_chunks, tokens.device, generator)
        for i in range(num_chunks):
            tokens, probs = self.resample(hidden, tokens, chunks == i, generator, probs)
        return tokens, probs

    def draw(
        self, hidden: th.Tensor, generator: th.Generator | None = None, probabilities: bool = False
    ) -> tuple[th.Tensor, th.Tensor | None]:
        """:meth:`~sb3_gitstorm.priors.base.LatentPrior.draw` with the draft-and-revise schedule.

        With several chunks, each token's probabilities are those of the last pass that drew it (its
        chunk's last draft or revise call): the straight-through gradient reaches ``h_t`` through that
        pass's network, given the other tokens as they were then; the conditioning tokens are discrete
        samples and pass no gradient.
        """
        masked = self._masked(hidden.shape[0], hidden.device)
        if self.one_pass:
            return self.draw_from(self.logits(hidden, masked), generator, probabilities)
        probs = hidden.new_zeros(*masked.shape, self.num_classes, dtype=th.float32) if probabilities else None
        tokens, probs = self.revise(hidden, masked, self.decode.draft_steps, generator, probs)
        for _ in range(self.decode.revise_rounds):
            tokens, probs = self.revise(hidden, tokens, self.decode.revise_steps, generator, probs)
        return tokens, probs
