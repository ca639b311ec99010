"""Network dimensions of the world model and the actor-critic, and the named sizes.

``"base"`` is the paper's configuration (STORM / GIT-STORM); ``"small"`` and ``"tiny"`` keep the
architecture and shrink the widths so that the same code trains on a laptop CPU or in unit tests.
Users choose one through ``policy_kwargs=dict(size="small")`` and may override any field, e.g.
``policy_kwargs=dict(size="small", transformer_layers=3)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

PRIORS = ("maskgit", "mlp")
MASKGIT_SCHEDULES = ("decode", "cosine", "reference")


@dataclass(frozen=True)
class ModelConfig:
    """Every dimension and world-model loss setting, with paper defaults.

    Attributes
    ----------
    latent_tokens, latent_classes : int
        The stochastic latent is ``latent_tokens`` categoricals of ``latent_classes`` classes (32 x 32).
    unimix : float
        Uniform mix of every categorical (latents and discrete actions).
    image_size : int
        Side of the square images the CNN encoder sees; other sizes are resized to it.
    cnn_channels : tuple of int
        Channels of the encoder's stride-2 convolutions (mirrored by the decoder).
    mlp_hidden, mlp_layers : int
        Encoder / decoder MLP for vector observations.
    hidden_dim, transformer_layers, transformer_heads, transformer_ffn, dropout, max_length
        Causal transformer sequence model (``h_t`` has ``hidden_dim`` features).
    head_hidden : int
        Hidden width of the reward and termination heads.
    reward_bins : int
        Bins of the symlog two-hot reward head and critic.
    maskgit_dim, maskgit_layers, maskgit_heads, maskgit_ffn : int
        Bidirectional transformer of the MaskGIT prior.
    maskgit_schedule : str
        How the MaskGIT prior is masked in training (:mod:`sb3_gitstorm.priors.maskgit`): ``"decode"``
        (default: each row masked like one pass of the imagination decoding, tokens of ``z_{t+1}``
        visible), ``"cosine"`` (MaskGIT's ``ceil(cos(pi/2 u) K)`` masked tokens of ``z_{t+1}``) or
        ``"reference"`` (the released GIT-STORM code: ``max(1, floor(cos(pi/2 u) K))`` masked tokens,
        ``z_t``'s tokens visible).
    prior_kl_positions : str
        ``"masked"`` (reference): the KL terms cover only the masked tokens; ``"all"``: every token.
    prior_ce_coef : float
        Weight of an extra cross-entropy between the prior and the posterior sample on the masked
        tokens (0 = reference behaviour).
    kl_free_bits, kl_dyn_coef, kl_rep_coef : float
        KL balance: ``kl_dyn_coef * max(free, KL_dyn) + kl_rep_coef * max(free, KL_rep)``.
    ac_hidden, ac_layers : int
        Actor and critic MLPs.
    """

    latent_tokens: int = 32
    latent_classes: int = 32
    unimix: float = 0.01
    image_size: int = 64
    cnn_channels: tuple[int, ...] = (32, 64, 128, 256)
    mlp_hidden: int = 512
    mlp_layers: int = 2
    hidden_dim: int = 512
    transformer_layers: int = 2
    transformer_heads: int = 8
    transformer_ffn: int = 1024
    dropout: float = 0.1
    max_length: int = 64
    head_hidden: int = 512
    reward_bins: int = 255
    maskgit_dim: int = 128
    maskgit_layers: int = 4
    maskgit_heads: int = 8
    maskgit_ffn: int = 128
    maskgit_schedule: str = "decode"
    prior_kl_positions: str = "masked"
    prior_ce_coef: float = 0.0
    kl_free_bits: float = 1.0
    kl_dyn_coef: float = 0.5
    kl_rep_coef: float = 0.1
    ac_hidden: int = 512
    ac_layers: int = 2

    def __post_init__(self) -> None:
        if self.hidden_dim % self.latent_tokens != 0:
            raise ValueError(
                f"hidden_dim ({self.hidden_dim}) must be a multiple of latent_tokens ({self.latent_tokens}): "
                "the MaskGIT prior gives each latent token an equal chunk of h_t"
            )
        for name, dim, heads in (
            ("hidden_dim", self.hidden_dim, self.transformer_heads),
            ("maskgit_dim", self.maskgit_dim, self.maskgit_heads),
        ):
            if dim % heads != 0:
                raise ValueError(f"{name} ({dim}) must be a multiple of its number of heads ({heads})")
        if self.image_size % 2 ** len(self.cnn_channels) != 0:
            raise ValueError(f"image_size ({self.image_size}) must be divisible by 2**len(cnn_channels)")
        if self.maskgit_schedule not in MASKGIT_SCHEDULES:
            raise ValueError(f"maskgit_schedule must be one of {MASKGIT_SCHEDULES}, got {self.maskgit_schedule!r}")
        if self.prior_kl_positions not in ("masked", "all"):
            raise ValueError(f"prior_kl_positions must be 'masked' or 'all', got {self.prior_kl_positions!r}")
        if not 0.0 <= self.unimix < 1.0:
            raise ValueError(f"unimix must be in [0, 1), got {self.unimix}")

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
        if "cnn_channels" in overrides:
            overrides["cnn_channels"] = tuple(overrides["cnn_channels"])
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
