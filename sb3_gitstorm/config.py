"""Network dimensions of the world model and the actor-critic, and the named sizes.

``"base"`` is the paper's configuration (STORM / GIT-STORM); ``"small"`` and ``"tiny"`` keep the
architecture and shrink the widths so that the same code trains on a laptop CPU or in unit tests.
Users choose one through ``policy_kwargs=dict(size="small")`` and may override any field, e.g.
``policy_kwargs=dict(size="small", transformer_layers=3)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["MASKGIT_SCHEDULES", "PRIORS", "SIZES", "ModelConfig"]

PRIORS = ("maskgit", "mlp")
MASKGIT_SCHEDULES = ("decode", "cosine", "reference")


@dataclass(frozen=True)
class ModelConfig:
    """Every dimension and world-model loss setting; the defaults are the paper's (``size="base"``).

    Pick a named size and override fields with ``policy_kwargs=dict(size="small", transformer_layers=3)``
    (:meth:`from_size`). The sizes' values are tabulated in the docs (the algorithm page).

    Attributes
    ----------
    latent_tokens : int
        ``K``: categorical variables of the stochastic latent ``z`` (32).
    latent_classes : int
        ``C``: classes of each variable (32).
    unimix : float
        Uniform mix of every categorical, latents and discrete actions (0.01); in ``[0, 1)``.
    image_size : int
        Side of the square images the CNN encoder sees (64); frames of other sizes are resized to it. A power
        of two times ``cnn_final_side`` (8, 16, 32, 64, 128, ...).
    cnn_channels : tuple of int
        Channels of the encoder's stride-2 convolutions at 64x64, mirrored by the decoder ((32, 64, 128, 256)).
        The encoder halves the side down to a ``cnn_final_side`` map, so the depth follows ``image_size``:
        32x32 images use the first three, 128x128 images repeat the last (:attr:`conv_channels`).
    cnn_final_side : int
        Side of the encoder's last feature map (4: STORM's four convolutions on 64x64 images).
    mlp_hidden : int
        Width of the encoder and decoder MLPs for vector observations (512).
    mlp_layers : int
        Hidden layers of those MLPs (2).
    hidden_dim : int
        Width of the causal transformer sequence model, the size of ``h_t`` (512); a multiple of
        ``transformer_heads``, and with the MaskGIT prior of ``latent_tokens``.
    transformer_layers : int
        Blocks of the sequence model (2).
    transformer_heads : int
        Attention heads of the sequence model (8).
    transformer_ffn : int
        Feed-forward width of the sequence model (1024).
    dropout : float
        Dropout of the sequence model, in training only (0.1).
    max_length : int
        Longest sequence the sequence model takes (64, learned positions): bounds ``batch_length`` and
        ``imagine_context_length - 1 + imagine_horizon``.
    head_hidden : int
        Hidden width of the reward and termination heads (512).
    head_layers : int
        Hidden layers of the reward and termination heads (2, STORM's code).
    reward_bins : int
        Bins of the symlog two-hot reward head and critic (255, STORM / DreamerV3).
    twohot_range : tuple of float
        Symlog-space range ``(low, high)`` of those bins ((-20, 20), DreamerV3).
    maskgit_dim : int
        Width of the MaskGIT prior's bidirectional transformer (128); a multiple of ``maskgit_heads``.
    maskgit_layers : int
        Blocks of the MaskGIT transformer (4).
    maskgit_heads : int
        Attention heads of the MaskGIT transformer (8).
    maskgit_ffn : int
        Feed-forward width of the MaskGIT transformer (128).
    maskgit_schedule : str
        How the MaskGIT prior is masked in training (:mod:`sb3_gitstorm.priors.maskgit`): ``"decode"``
        (default: each row masked like one pass of the imagination decoding, tokens of ``z_{t+1}``
        visible), ``"cosine"`` (MaskGIT's ``ceil(cos(pi/2 u) K)`` masked tokens of ``z_{t+1}``) or
        ``"reference"`` (the released GIT-STORM code: ``max(1, floor(cos(pi/2 u) K))`` masked tokens,
        ``z_t``'s tokens visible).
    prior_kl_positions : str
        ``"masked"`` (the released code, default): the KL terms cover only the masked tokens; ``"all"``: every
        token. A MaskGIT prior rejects ``"all"`` where its training rows show tokens of ``z_{t+1}`` (``"cosine"``,
        ``"decode"`` with a multi-pass decoding): the KL would score it where it sees its target.
    prior_ce_coef : float
        Weight of an extra cross-entropy between the prior and the posterior sample on the masked tokens
        (0.0, the released code's behaviour).
    kl_free_bits : float
        Free nats of each KL term (1.0). The KL loss is ``kl_dyn_coef * max(free, KL_dyn) + kl_rep_coef *
        max(free, KL_rep)``, each KL summed over the tokens and averaged over the batch before the clip
        (STORM), so a term below ``free`` has no gradient.
    kl_dyn_coef : float
        Weight of the dynamics KL, ``KL(sg(posterior) || prior)`` (0.5).
    kl_rep_coef : float
        Weight of the representation KL, ``KL(posterior || sg(prior))`` (0.1; the authors use 1.0 for
        continuous control).
    imagination_kl_orders : int
        Random decoding orders per row of the logged ``world_model/imagination_kl`` for a MaskGIT draft
        without revise rounds: an upper bound that tightens with more orders
        (:meth:`~sb3_gitstorm.priors.MaskGITPrior.sampler_log_prob`), each costing ``draft_steps`` no-grad
        passes of the prior over the batch (1: the order-averaged chain rule, as cheap as one draft; the
        world-model metrics use more). 0: the diagnostic is not computed (it adds an eval-mode pass of the
        sequence model and a no-grad prior pass to every update, about a fifth of a world-model update's
        time at the tiny and small sizes). Nothing else uses it: the draft's estimate draws from a forked random
        stream, so the setting does not change training.
    motion_weight : float
        Images only: the squared error of each pixel is weighted by ``1 + motion_weight * sd / mean(sd)``
        (normalised to mean 1 over the frame), ``sd`` the pixel's standard deviation over the frame's
        episode in its replay window (largest over channels, no gradient; an episode start is no motion,
        a segment of one step weights every pixel 1). 0 (paper): every pixel counts the same. The logs show
        the weighted ``world_model/reconstruction_loss`` and the plain ``reconstruction_error``. Small moving
        objects on a static background (a cart and pole in 64x64 pixels) are then what the decoder, and
        so the latent, must get right first.
    ac_hidden : int
        Width of the actor and critic MLPs (512).
    ac_layers : int
        Hidden layers of the actor and critic MLPs (2).
    actor_std_range : tuple of float
        ``(min, max)`` standard deviation of the Gaussian actor, Box actions ((0.1, 1.0), DreamerV3).
    actor_output_scale : float
        The actor's output layer starts at this multiple of PyTorch's initialisation, bias zero (0.01,
        DreamerV3's ``outscale``): the untrained policy is near uniform (Discrete) or near zero-mean (Box).
    return_decay : float
        Advantages are divided by ``max(1, S)``, ``S`` an EMA with this decay (0.99, DreamerV3) of the spread
        between the ``return_percentiles`` of the lambda-returns.
    return_percentiles : tuple of float
        The percentiles whose spread is ``S`` ((0.05, 0.95), DreamerV3).
    ac_adam_eps : float
        Adam epsilon of the actor and the critic (1e-5, STORM / DreamerV3).
    """

    latent_tokens: int = 32
    latent_classes: int = 32
    unimix: float = 0.01
    image_size: int = 64
    cnn_channels: tuple[int, ...] = (32, 64, 128, 256)
    cnn_final_side: int = 4
    mlp_hidden: int = 512
    mlp_layers: int = 2
    hidden_dim: int = 512
    transformer_layers: int = 2
    transformer_heads: int = 8
    transformer_ffn: int = 1024
    dropout: float = 0.1
    max_length: int = 64
    head_hidden: int = 512
    head_layers: int = 2
    reward_bins: int = 255
    twohot_range: tuple[float, float] = (-20.0, 20.0)
    maskgit_dim: int = 128
    maskgit_layers: int = 4
    maskgit_heads: int = 8
    maskgit_ffn: int = 128
    maskgit_schedule: str = "decode"
    prior_kl_positions: str = "masked"
    prior_ce_coef: float = 0.0
    imagination_kl_orders: int = 1
    kl_free_bits: float = 1.0
    kl_dyn_coef: float = 0.5
    kl_rep_coef: float = 0.1
    motion_weight: float = 0.0
    ac_hidden: int = 512
    ac_layers: int = 2
    actor_std_range: tuple[float, float] = (0.1, 1.0)
    actor_output_scale: float = 0.01
    return_decay: float = 0.99
    return_percentiles: tuple[float, float] = (0.05, 0.95)
    ac_adam_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name, dim, heads in (
            ("hidden_dim", self.hidden_dim, self.transformer_heads),
            ("maskgit_dim", self.maskgit_dim, self.maskgit_heads),
        ):
            if dim % heads != 0:
                raise ValueError(f"{name} ({dim}) must be a multiple of its number of heads ({heads})")
        final, halvings = self.cnn_final_side, self.image_size // max(1, self.cnn_final_side)
        if final < 1 or self.image_size % final or halvings < 2 or halvings & (halvings - 1):
            raise ValueError(f"image_size must be cnn_final_side ({final}) times a power of two >= 2, got {self.image_size}")
        if not self.cnn_channels:
            raise ValueError("cnn_channels must name at least one convolution")
        if self.maskgit_schedule not in MASKGIT_SCHEDULES:
            raise ValueError(f"maskgit_schedule must be one of {MASKGIT_SCHEDULES}, got {self.maskgit_schedule!r}")
        if self.prior_kl_positions not in ("masked", "all"):
            raise ValueError(f"prior_kl_positions must be 'masked' or 'all', got {self.prior_kl_positions!r}")
        if self.imagination_kl_orders < 0:
            raise ValueError(f"imagination_kl_orders must be >= 0 (0: not computed), got {self.imagination_kl_orders}")
        if self.motion_weight < 0.0:
            raise ValueError(f"motion_weight must be >= 0, got {self.motion_weight}")
        if not 0.0 <= self.unimix < 1.0:
            raise ValueError(f"unimix must be in [0, 1), got {self.unimix}")

    def check_sequence_length(self, name: str, length: int) -> None:
        """Raise a ValueError if a sequence of ``length`` steps (called ``name``) does not fit the transformer."""
        if length > self.max_length:
            raise ValueError(f"{name} ({length}) exceeds the transformer's max_length ({self.max_length})")

    @property
    def conv_channels(self) -> tuple[int, ...]:
        """Channels of the encoder's convolutions at ``image_size``: one per halving down to ``cnn_final_side``."""
        depth = (self.image_size // self.cnn_final_side).bit_length() - 1
        return (self.cnn_channels + (self.cnn_channels[-1],) * depth)[:depth]

    @property
    def latent_shape(self) -> tuple[int, int]:
        """``(K, C)``: latent tokens and classes."""
        return self.latent_tokens, self.latent_classes

    @property
    def latent_dim(self) -> int:
        """Size of the flattened one-hot latent ``z``."""
        return self.latent_tokens * self.latent_classes

    @property
    def feature_dim(self) -> int:
        """Size of the actor-critic input ``concat(z, h)``."""
        return self.latent_dim + self.hidden_dim

    @classmethod
    def from_size(cls, size: str = "base", **overrides) -> ModelConfig:
        """Build the config of a named size with per-field overrides.

        Parameters
        ----------
        size : str
            One of ``"tiny"``, ``"small"``, ``"base"`` (paper size).
        **overrides
            Any field of :class:`ModelConfig`.

        Raises
        ------
        ValueError
            For an unknown size or field name.
        """
        if size not in SIZES:
            raise ValueError(f"Unknown size {size!r}; choose one of {sorted(SIZES)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"Unknown model setting(s) {unknown} in policy_kwargs; valid settings: {sorted(fields)}")
        # Tuple fields may come as lists (YAML, JSON): frozen settings stay hashable tuples.
        overrides = {name: tuple(value) if isinstance(value, list) else value for name, value in overrides.items()}
        return cls(**{**SIZES[size], **overrides})


SIZES: dict[str, dict] = {
    "base": {},
    "small": dict(
        cnn_channels=(16, 32, 64, 128),
        mlp_hidden=256,
        hidden_dim=256,
        transformer_heads=4,
        transformer_ffn=512,
        head_hidden=256,
        maskgit_dim=64,
        maskgit_layers=2,
        maskgit_heads=4,
        maskgit_ffn=64,
        ac_hidden=256,
    ),
    "tiny": dict(
        latent_tokens=8,
        latent_classes=8,
        image_size=32,  # a CPU budget: 4x fewer pixels to encode and decode than the paper's 64x64
        cnn_channels=(4, 8, 16, 16),
        mlp_hidden=32,
        mlp_layers=1,
        hidden_dim=32,
        transformer_layers=1,
        transformer_heads=2,
        transformer_ffn=64,
        head_hidden=32,
        reward_bins=63,
        maskgit_dim=16,
        maskgit_layers=1,
        maskgit_heads=1,
        maskgit_ffn=32,
        ac_hidden=32,
    ),
}
