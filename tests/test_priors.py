"""The two priors on their own: shapes, the MaskGIT training mask, draft-and-revise decoding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch as th

from sb3_gitstorm.config import ModelConfig
from sb3_gitstorm.priors import MaskGITPrior, MLPPrior, make_prior
from sb3_gitstorm.priors.maskgit import cosine_mask, random_chunks

K, C, H = 8, 8, 32


def maskgit(unimix: float = 0.01, **kwargs) -> MaskGITPrior:
    th.manual_seed(0)
    return MaskGITPrior(H, K, C, unimix, dim=16, layers=1, heads=2, ffn_dim=32, **kwargs)


class PeakedPrior(MaskGITPrior):
    """A MaskGIT prior whose logits put (almost) all mass on fixed target tokens and record the inputs."""

    def __init__(self, target: th.Tensor) -> None:
        super().__init__(H, K, C, unimix=0.0, dim=16, layers=1, heads=1, ffn_dim=16)
        self.target = target
        self.inputs: list[th.Tensor] = []

    def logits(self, hidden: th.Tensor, tokens: th.Tensor) -> th.Tensor:
        self.inputs.append(tokens.clone())
        return 50.0 * th.nn.functional.one_hot(self.target, C).float()


@pytest.mark.parametrize("name", ["maskgit", "mlp"])
def test_prior_shapes(name: str) -> None:
    prior = make_prior(name, ModelConfig.from_size("tiny"))
    cfg = ModelConfig.from_size("tiny")
    h = th.randn(5, cfg.hidden_dim)
    tokens = th.randint(cfg.latent_classes, (5, cfg.latent_tokens))
    log_probs = prior.log_probs(h)
    assert log_probs.shape == (5, cfg.latent_tokens, cfg.latent_classes)
    th.testing.assert_close(log_probs.exp().sum(-1), th.ones(5, cfg.latent_tokens))
    train_lp, mask = prior.training_log_probs(h, tokens, tokens)
    assert train_lp.shape == log_probs.shape and mask.shape == tokens.shape and mask.dtype == th.bool
    sample = prior.sample(h, 2, 2, 1)
    assert sample.shape == tokens.shape and sample.dtype == th.long
    assert int(sample.min()) >= 0 and int(sample.max()) < cfg.latent_classes


def test_unimix_floor() -> None:
    """Every class keeps at least ``unimix / C`` probability, whatever the logits."""
    prior = MLPPrior(H, K, C, unimix=0.01)
    with th.no_grad():
        prior.head.weight.mul_(1000.0)
    with th.no_grad():
        probs = prior.log_probs(th.randn(64, H)).exp()
    assert float(probs.min()) >= 0.01 / C * (1 - 1e-5)


def test_hidden_dim_must_split_into_tokens() -> None:
    with pytest.raises(ValueError, match="multiple of num_tokens"):
        MaskGITPrior(30, K, C, 0.01)


def test_cosine_mask_ratio_matches_schedule() -> None:
    """The masked fraction follows max(1, floor(cos(pi/2 u) K)) / K with u ~ U(0, 1)."""
    gen = th.Generator().manual_seed(0)
    mask = cosine_mask(40_000, 32, th.device("cpu"), gen)
    counts = mask.sum(1)
    assert int(counts.min()) >= 1 and int(counts.max()) <= 32
    u = (np.arange(200_000) + 0.5) / 200_000
    expected = np.maximum(1, np.floor(np.cos(0.5 * math.pi * u) * 32)).mean() / 32
    assert abs(mask.float().mean().item() - expected) < 0.01
    # The schedule masks everything for u near 0 and a single token for u near 1.
    assert (counts == 32).any() and (counts == 1).any()


def test_maskgit_training_masks_only_the_visible_source() -> None:
    """Masked positions carry [MASK]; the visible tokens come from z_t ("current") or z_{t+1} ("next")."""
    current = th.zeros(6, K, dtype=th.long)
    nxt = th.ones(6, K, dtype=th.long)
    for visible, expected_token in (("current", 0), ("next", 1)):
        prior = maskgit(visible=visible)
        seen = []
        prior.logits = lambda h, tokens, seen=seen, orig=prior.logits: (seen.append(tokens), orig(h, tokens))[1]
        _, mask = prior.training_log_probs(th.randn(6, H), current, nxt)
        tokens = seen[0]
        assert th.equal(tokens == prior.mask_id, mask)
        assert bool((tokens[~mask] == expected_token).all())


def test_random_chunks_partition_positions() -> None:
    chunks = random_chunks(100, 32, 5, th.device("cpu"), th.Generator().manual_seed(1))
    sizes = th.stack([(chunks == i).sum(1) for i in range(5)], 1)
    assert bool((sizes.sum(1) == 32).all()) and int(sizes.min()) == 6 and int(sizes.max()) == 7
    with pytest.raises(ValueError):
        random_chunks(1, 32, 33, th.device("cpu"))


def test_resample_changes_only_remasked_positions() -> None:
    prior = maskgit()
    gen = th.Generator().manual_seed(3)
    tokens = th.randint(C, (64, K), generator=gen)
    positions = th.rand(64, K, generator=gen) < 0.4
    out = prior.resample(th.randn(64, H), tokens, positions, gen)
    assert th.equal(out[~positions], tokens[~positions])
    assert bool((out[positions] != tokens[positions]).any())  # something was actually re-drawn


def test_revise_round_resamples_each_chunk_given_the_rest() -> None:
    """A revise round with T chunks calls the network T times, each time with exactly one chunk masked."""
    target = th.randint(C, (16, K), generator=th.Generator().manual_seed(0))
    prior = PeakedPrior(target)
    start = (target + 1) % C
    out = prior.revise(th.zeros(16, H), start, num_chunks=4)
    assert len(prior.inputs) == 4
    masked = [inp == prior.mask_id for inp in prior.inputs]
    assert bool((th.stack(masked).sum(0) == 1).all())  # every position re-masked exactly once
    for inp, m in zip(prior.inputs, masked, strict=True):
        assert int(m.sum(1).min()) >= 1 and int(m.sum(1).max()) <= 2  # 8 positions / 4 chunks
        # unmasked positions hold the current tokens: the original ones or already revised ones
        assert bool(((inp == start) | (inp == target) | m).all())
    assert th.equal(out, target)


@pytest.mark.parametrize("draft, revise, rounds", [(1, 1, 1), (4, 1, 0), (1, 4, 2), (8, 2, 3)])
def test_peaked_prior_recovers_target(draft: int, revise: int, rounds: int) -> None:
    target = th.randint(C, (32, K), generator=th.Generator().manual_seed(1))
    prior = PeakedPrior(target)
    assert th.equal(prior.sample(th.zeros(32, H), draft, revise, rounds), target)


def test_draft_fills_chunks_in_turn() -> None:
    """Draft with T chunks: the t-th call sees (T - t)/T of the positions still masked."""
    target = th.randint(C, (8, K), generator=th.Generator().manual_seed(2))
    prior = PeakedPrior(target)
    prior.sample(th.zeros(8, H), draft_steps=4, revise_steps=2, revise_rounds=0)
    assert [int((inp == prior.mask_id).sum(1)[0]) for inp in prior.inputs] == [8, 6, 4, 2]


def test_one_chunk_revise_discards_the_draft() -> None:
    """With T_revise = 1 every position is re-masked, so one all-[MASK] pass gives the same distribution."""
    target = th.randint(C, (4, K), generator=th.Generator().manual_seed(3))
    prior = PeakedPrior(target)
    prior.sample(th.zeros(4, H), draft_steps=4, revise_steps=1, revise_rounds=3)
    assert len(prior.inputs) == 1 and bool((prior.inputs[0] == prior.mask_id).all())


def test_trained_maskgit_prior_samples_its_targets() -> None:
    """Fitting the prior to a deterministic h -> z map makes sampling recover z, and revise keeps it."""
    gen = th.Generator().manual_seed(0)
    hidden = th.randn(8, H, generator=gen)
    target = th.randint(C, (8, K), generator=gen)
    prior = maskgit(unimix=0.0, visible="next")
    opt = th.optim.Adam(prior.parameters(), lr=3e-3)
    for _ in range(300):
        log_probs, mask = prior.training_log_probs(hidden, target, target, gen)
        nll = -(log_probs.gather(-1, target[..., None]).squeeze(-1) * mask).sum() / mask.sum()
        opt.zero_grad()
        nll.backward()
        opt.step()
    with th.no_grad():
        accuracy = (prior.sample(hidden, 2, 2, 2, generator=gen) == target).float().mean().item()
    assert accuracy > 0.95
