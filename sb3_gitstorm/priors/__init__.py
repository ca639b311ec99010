"""Priors ``p(z_{t+1} | h_t)`` of the world model: STORM's MLP head and GIT-STORM's MaskGIT."""

from sb3_gitstorm.config import PRIORS, ModelConfig
from sb3_gitstorm.priors.base import LatentPrior
from sb3_gitstorm.priors.maskgit import PAPER_DECODE, DecodeSchedule, MaskGITPrior
from sb3_gitstorm.priors.mlp import MLPPrior


def make_prior(name: str, config: ModelConfig, decode: DecodeSchedule = PAPER_DECODE) -> LatentPrior:
    """Build the prior called ``name`` (``"maskgit"`` or ``"mlp"``) with the dimensions of ``config``.

    ``decode`` is the MaskGIT prior's draft-and-revise schedule in imagination (the MLP prior samples
    in one shot and ignores it).
    """
    common = dict(
        hidden_dim=config.hidden_dim,
        num_tokens=config.latent_tokens,
        num_classes=config.latent_classes,
        unimix=config.unimix,
    )
    if name == "maskgit":
        return MaskGITPrior(
            **common,
            dim=config.maskgit_dim,
            layers=config.maskgit_layers,
            heads=config.maskgit_heads,
            ffn_dim=config.maskgit_ffn,
            schedule=config.maskgit_schedule,
            decode=decode,
        )
    if name == "mlp":
        return MLPPrior(**common)
    raise ValueError(f"Unknown prior {name!r}; choose one of {PRIORS}")


__all__ = ["PAPER_DECODE", "DecodeSchedule", "LatentPrior", "MLPPrior", "MaskGITPrior", "make_prior"]
