"""Priors ``p(z_{t+1} | h_t)`` of the world model: STORM's MLP head and GIT-STORM's MaskGIT."""

from sb3_gitstorm.config import PRIORS, ModelConfig
from sb3_gitstorm.priors.base import LatentPrior
from sb3_gitstorm.priors.maskgit import PAPER_DECODE, DecodeSchedule, MaskGITPrior
from sb3_gitstorm.priors.mlp import MLPPrior


def make_prior(name: str, config: ModelConfig, decode: DecodeSchedule = PAPER_DECODE) -> LatentPrior:
    """Build the prior called ``name`` (``"maskgit"`` or ``"mlp"``) with the dimensions of ``config``.

    ``decode`` is the MaskGIT prior's draft-and-revise schedule in imagination (the MLP prior samples
    in one shot and ignores it).

    Raises
    ------
    ValueError
        For an unknown prior, or ``prior_kl_positions="all"`` with a MaskGIT training schedule that
        shows tokens of ``z_{t+1}``: the KL would score the prior on positions where it sees its target.
    """
    common = (config.hidden_dim, config.latent_tokens, config.latent_classes, config.unimix)
    if name == "maskgit":
        schedule = config.maskgit_schedule
        if config.prior_kl_positions == "all" and (schedule == "cosine" or (schedule == "decode" and not decode.one_pass)):
            setting = f"maskgit_schedule={schedule!r}"
            if schedule == "decode":
                setting += f" and a {len(decode.passes(config.latent_tokens))}-pass decoding ({decode})"
            raise ValueError(
                f"prior_kl_positions='all' with {setting}: training rows show tokens of z_{{t+1}}, and the KL on "
                "every token would score the prior where it sees its target. Use prior_kl_positions='masked', or "
                "maskgit_schedule='reference', or 'decode' with a one-pass decoding (draft_steps=revise_steps=1)"
            )
        return MaskGITPrior(
            *common,
            dim=config.maskgit_dim,
            layers=config.maskgit_layers,
            heads=config.maskgit_heads,
            ffn_dim=config.maskgit_ffn,
            schedule=config.maskgit_schedule,
            decode=decode,
        )
    if name == "mlp":
        return MLPPrior(*common)
    raise ValueError(f"Unknown prior {name!r}; choose one of {PRIORS}")


__all__ = ["PAPER_DECODE", "DecodeSchedule", "LatentPrior", "MLPPrior", "MaskGITPrior", "make_prior"]
