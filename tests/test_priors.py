"""The two priors on their own: shapes, the MaskGIT training mask, draft-and-revise decoding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch as th

from sb3_gitstorm.config import SIZES, ModelConfig
from sb3_gitstorm.distributions import categorical_kl
from sb3_gitstorm.priors import PAPER_DECODE, DecodeSchedule, MaskGITPrior, MLPPrior, make_prior
from sb3_gitstorm.priors.maskgit import masked_counts, random_chunks, training_mask

K, C, H = 8, 8, 32


def maskgit(unimix: float = 0.01, **kwargs) -> MaskGITPrior:
    th.manual_seed(0)
    return MaskGITPrior(H, K, C, unimix, dim=16, layers=1, heads=2, ffn_dim=32, **kwargs)


class PeakedPrior(MaskGITPrior):
    """A MaskGIT prior whose logits put (almost) all mass on fixed target tokens and record the inputs."""

    def __init__(self, target: th.Tensor, decode: DecodeSchedule = PAPER_DECODE) -> None:
        super().__init__(H, K, C, unimix=0.0, dim=16, layers=1, heads=1, ffn_dim=16, decode=decode)
        self.target = target
        self.inputs: list[th.Tensor] = []

    def logits(self, hidden: th.Tensor, tokens: th.Tensor) -> th.Tensor:
        self.inputs.append(tokens.clone())
        return 50.0 * th.nn.functional.one_hot(self.target, C).float()


@pytest.mark.parametrize("name", ["maskgit", "mlp"])
def test_prior_shapes(name: str) -> None:
    cfg = ModelConfig.from_size("tiny")
    prior = make_prior(name, cfg, DecodeSchedule(2, 2, 1))
    h = th.randn(5, cfg.hidden_dim)
    tokens = th.randint(cfg.latent_classes, (5, cfg.latent_tokens))
    log_probs = prior.log_probs(h)
    assert log_probs.shape == (5, cfg.latent_tokens, cfg.latent_classes)
    th.testing.assert_close(log_probs.exp().sum(-1), th.ones(5, cfg.latent_tokens))
    train_lp, mask = prior.training_log_probs(h, tokens, tokens)
    assert train_lp.shape == log_probs.shape and mask.shape == tokens.shape and mask.dtype == th.bool
    imagined = prior.imagination_log_probs(h, tokens)
    assert imagined.shape == log_probs.shape
    th.testing.assert_close(imagined.exp().sum(-1), th.ones(5, cfg.latent_tokens))
    sample = prior.sample(h)
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


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("name, share", [("maskgit", 0.97), ("mlp", 0.9)])
def test_untrained_prior_is_close_to_uniform(name: str, share: float, size: str) -> None:
    """At initialisation the mean token entropy is close to log(C) at every size, from all-[MASK] and from
    partly masked inputs: an untrained prior must not pull the posterior towards random classes. (STORM's
    linear prior keeps PyTorch's default initialisation, logits of standard deviation ~0.6 for unit h.)"""
    cfg = ModelConfig.from_size(size)
    th.manual_seed(0)
    prior = make_prior(name, cfg)
    hidden = th.randn(64, cfg.hidden_dim)
    tokens = th.randint(cfg.latent_classes, (64, cfg.latent_tokens))
    with th.no_grad():
        for log_probs in (prior.log_probs(hidden), prior.training_log_probs(hidden, tokens, tokens)[0]):
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            assert float(entropy.mean()) > share * math.log(cfg.latent_classes)


def fit_masked_tokens(prior: MaskGITPrior, hidden: th.Tensor, draw_target, gen: th.Generator, steps: int = 300) -> None:
    """Fit the prior's masked-token cross-entropy to targets ``draw_target()`` (long ``(N, K)``) given ``hidden``."""
    opt = th.optim.Adam(prior.parameters(), lr=3e-3)
    for _ in range(steps):
        target = draw_target()
        log_probs, mask = prior.training_log_probs(hidden, target, target, gen)
        nll = -(log_probs.gather(-1, target[..., None]).squeeze(-1) * mask).sum() / mask.sum()
        opt.zero_grad()
        nll.backward()
        opt.step()


def cosine_counts(rounding, samples: int = 400_000, k: int = 32) -> np.ndarray:
    u = (np.arange(samples) + 0.5) / samples
    return np.clip(rounding(np.cos(0.5 * math.pi * u) * k), 1, k)


@pytest.mark.parametrize("k", [8, 32])
def test_cosine_schedule_masks_everything_at_the_documented_rate(k: int) -> None:
    """ "cosine": ceil(cos(pi/2 u) K) masked tokens, so a share (2/pi) acos((K-1)/K) of the rows is all-masked."""
    gen = th.Generator().manual_seed(0)
    counts = masked_counts("cosine", 100_000, k, DecodeSchedule(), th.device("cpu"), gen)
    share = (2 / math.pi) * math.acos((k - 1) / k)
    assert abs((counts == k).float().mean().item() - share) < 0.01
    assert abs(counts.float().mean().item() - cosine_counts(np.ceil, k=k).mean()) < 0.05
    assert int(counts.min()) >= 1


def test_reference_schedule_matches_the_released_code() -> None:
    """ "reference": max(1, floor(cos(pi/2 u) K)) masked tokens, all-masked practically never."""
    gen = th.Generator().manual_seed(0)
    mask = training_mask("reference", 100_000, 32, DecodeSchedule(), th.device("cpu"), gen)
    counts = mask.sum(1)
    assert abs(counts.float().mean().item() - cosine_counts(np.floor).mean()) < 0.05
    assert (counts == 32).float().mean().item() < 1e-3 and (counts == 1).any()


@pytest.mark.parametrize(
    "decode, passes",
    [
        (DecodeSchedule(1, 1, 1), [8]),  # the draft is discarded: one all-[MASK] pass
        (DecodeSchedule(4, 1, 3), [8]),
        (DecodeSchedule(1, 1, 0), [8]),
        (DecodeSchedule(4, 2, 0), [8, 6, 4, 2]),
        (DecodeSchedule(3, 2, 1), [8, 5, 2, 4, 4]),
    ],
)
def test_decode_schedule_masks_like_the_decoding_passes(decode: DecodeSchedule, passes: list[int]) -> None:
    """ "decode": every row is masked like one of the decoding passes, each drawn equally often; with the
    paper's 1/1/1 schedule every row is all-masked, as every imagined latent is sampled from all-[MASK]."""
    assert decode.passes(K) == passes
    gen = th.Generator().manual_seed(0)
    counts = masked_counts("decode", 50_000, K, decode, th.device("cpu"), gen)
    for count in set(passes):
        share = (counts == count).float().mean().item()
        assert abs(share - passes.count(count) / len(passes)) < 0.01
    assert set(counts.tolist()) == set(passes)


def test_decode_schedule_passes_match_what_sampling_feeds_the_network() -> None:
    """The masked counts that "decode" trains on are those the network is called with when sampling."""
    decode = DecodeSchedule(3, 2, 2)
    prior = PeakedPrior(th.zeros(4, K, dtype=th.long), decode)
    prior.sample(th.zeros(4, H))
    seen = [int((inp == prior.mask_id).sum(1)[0]) for inp in prior.inputs]
    assert seen == decode.passes(K)


@pytest.mark.parametrize("setting", ["draft_steps", "revise_steps"])
def test_decode_schedule_is_checked(setting: str) -> None:
    with pytest.raises(ValueError, match=setting):
        MaskGITPrior(H, K, C, 0.01, dim=16, layers=1, heads=2, ffn_dim=32, decode=DecodeSchedule(**{setting: K + 1}))
    with pytest.raises(ValueError, match="revise_rounds"):
        DecodeSchedule(revise_rounds=-1).check(K)


@pytest.mark.parametrize("decode", [DecodeSchedule(1, 1, 1), DecodeSchedule(4, 1, 0), DecodeSchedule(1, 4, 1)])
def test_imagination_log_probs_follow_the_decoding_passes(decode: DecodeSchedule) -> None:
    """One all-[MASK] pass for the one-pass schedules; otherwise each token from the pass that decodes it,
    teacher-forced: a draft chunk sees the earlier chunks, a revise chunk all the others."""
    prior = maskgit(decode=decode)
    gen = th.Generator().manual_seed(0)
    hidden, tokens = th.randn(16, H, generator=gen), th.randint(C, (16, K), generator=gen)
    calls: list[th.Tensor] = []
    prior.logits = lambda h, t, orig=prior.logits: (calls.append(t.clone()), orig(h, t))[1]
    with th.no_grad():
        out = prior.imagination_log_probs(hidden, tokens, gen)
        if decode.one_pass:
            th.testing.assert_close(out, prior.log_probs(hidden))
            return
    masked = [inp == prior.mask_id for inp in calls]
    n = decode.revise_steps if decode.revise_rounds else decode.draft_steps
    assert len(calls) == n
    assert [int(m.sum(1)[0]) for m in masked] == decode.passes(K)[-n:]
    for inp, m in zip(calls, masked, strict=True):
        assert th.equal(inp[~m], tokens[~m])  # the visible tokens are the teacher's


def test_chunked_maskgit_learns_token_dependencies() -> None:
    """A one-token-at-a-time prior fitted to a correlated target (all tokens equal, the class random)
    keeps the correlation in its samples and has a small chain-rule KL; independent tokens cannot."""
    gen = th.Generator().manual_seed(0)
    hidden = th.zeros(512, H)
    prior = maskgit(unimix=0.0, decode=DecodeSchedule(K, 1, 0))
    fit_masked_tokens(prior, hidden, lambda: th.randint(C, (512, 1), generator=gen).expand(512, K), gen)
    with th.no_grad():
        sample = prior.sample(hidden[:256], generator=gen)
        assert (sample == sample[:, :1]).float().mean().item() > 0.95
        target = th.randint(C, (256, 1), generator=gen).expand(256, K)
        posterior = th.log(th.nn.functional.one_hot(target, C).float().clamp(min=1e-6))
        chain = categorical_kl(posterior, prior.imagination_log_probs(hidden[:256], target, gen)).sum(-1).mean()
        one_shot = categorical_kl(posterior, prior.log_probs(hidden[:256])).sum(-1).mean()
    # The joint's entropy is log C; independent tokens pay about K log C.
    assert float(chain) < 1.5 * math.log(C) and float(one_shot) > 0.8 * K * math.log(C)


@pytest.mark.filterwarnings("ignore:draft-and-revise with several chunks")
@pytest.mark.parametrize("schedule, expected_token", [("reference", 0), ("decode", 1), ("cosine", 1)])
def test_maskgit_training_masks_only_the_visible_source(schedule: str, expected_token: int) -> None:
    """Masked positions carry [MASK]; the visible tokens are z_t's ("reference") or z_{t+1}'s."""
    current = th.zeros(6, K, dtype=th.long)
    nxt = th.ones(6, K, dtype=th.long)
    prior = maskgit(schedule=schedule, decode=DecodeSchedule(4, 2, 0))
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
    out, _ = prior.resample(th.randn(64, H), tokens, positions, gen)
    assert th.equal(out[~positions], tokens[~positions])
    assert bool((out[positions] != tokens[positions]).any())  # something was actually re-drawn


def test_revise_round_resamples_each_chunk_given_the_rest() -> None:
    """A revise round with T chunks calls the network T times, each time with exactly one chunk masked."""
    target = th.randint(C, (16, K), generator=th.Generator().manual_seed(0))
    prior = PeakedPrior(target)
    start = (target + 1) % C
    out, _ = prior.revise(th.zeros(16, H), start, num_chunks=4)
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
    prior = PeakedPrior(target, DecodeSchedule(draft, revise, rounds))
    assert th.equal(prior.sample(th.zeros(32, H)), target)


def test_draft_fills_chunks_in_turn() -> None:
    """Draft with T chunks: the t-th call sees (T - t)/T of the positions still masked."""
    target = th.randint(C, (8, K), generator=th.Generator().manual_seed(2))
    prior = PeakedPrior(target, DecodeSchedule(draft_steps=4, revise_steps=2, revise_rounds=0))
    prior.sample(th.zeros(8, H))
    assert [int((inp == prior.mask_id).sum(1)[0]) for inp in prior.inputs] == [8, 6, 4, 2]


def test_one_chunk_revise_discards_the_draft() -> None:
    """With T_revise = 1 every position is re-masked, so one all-[MASK] pass gives the same distribution."""
    target = th.randint(C, (4, K), generator=th.Generator().manual_seed(3))
    prior = PeakedPrior(target, DecodeSchedule(draft_steps=4, revise_steps=1, revise_rounds=3))
    prior.sample(th.zeros(4, H))
    assert len(prior.inputs) == 1 and bool((prior.inputs[0] == prior.mask_id).all())


def test_trained_maskgit_prior_samples_its_targets() -> None:
    """Fitting the prior to a deterministic h -> z map makes sampling recover z, and revise keeps it."""
    gen = th.Generator().manual_seed(0)
    hidden = th.randn(8, H, generator=gen)
    target = th.randint(C, (8, K), generator=gen)
    prior = maskgit(unimix=0.0, schedule="cosine", decode=DecodeSchedule(2, 2, 2))
    fit_masked_tokens(prior, hidden, lambda: target, gen)
    with th.no_grad():
        accuracy = (prior.sample(hidden, generator=gen) == target).float().mean().item()
    assert accuracy > 0.95


@pytest.mark.parametrize(
    "make",
    [lambda: MLPPrior(H, K, C, 0.01), maskgit, lambda: maskgit(decode=DecodeSchedule(draft_steps=4, revise_steps=2))],
    ids=["mlp", "maskgit-one-pass", "maskgit-chunked"],
)
def test_draw_with_probabilities_is_the_same_sample_with_its_distribution(make) -> None:
    """The straight-through path of a differentiable dream draws what imagination draws, and each token's
    probabilities are the distribution it was drawn from, with a gradient to h."""
    th.manual_seed(0)
    prior, hidden = make(), th.randn(64, H, requires_grad=True)
    tokens, probs = prior.draw(hidden, th.Generator().manual_seed(1), probabilities=True)
    assert th.equal(tokens, prior.sample(hidden, th.Generator().manual_seed(1)))
    assert probs is not None and probs.shape == (64, K, C)
    th.testing.assert_close(probs.sum(-1), th.ones(64, K))
    if prior.one_pass:
        th.testing.assert_close(probs, prior.log_probs(hidden).exp())
    (grad,) = th.autograd.grad((probs * th.randn(64, K, C)).sum(), hidden)
    assert bool((grad.abs().sum(-1) > 0).all())
