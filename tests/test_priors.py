"""The two priors on their own: shapes, the MaskGIT training mask, draft-and-revise decoding."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch as th

from sb3_gitstorm import GITSTORM
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
    prior = make_prior(name, cfg, DecodeSchedule(2, 2, 0))
    h = th.randn(5, cfg.hidden_dim)
    tokens = th.randint(cfg.latent_classes, (5, cfg.latent_tokens))
    log_probs = prior.log_probs(h)
    assert log_probs.shape == (5, cfg.latent_tokens, cfg.latent_classes)
    th.testing.assert_close(log_probs.exp().sum(-1), th.ones(5, cfg.latent_tokens))
    train_lp, mask = prior.training_log_probs(h, tokens, tokens)
    assert train_lp.shape == log_probs.shape and mask.shape == tokens.shape and mask.dtype == th.bool
    assert prior.sampler_log_prob(h, tokens, num_orders=3).shape == prior.sampler_kl(log_probs, h).shape == (5,)
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
    """At initialisation the mean token entropy is close to log(C) at every size, from all-[MASK] and (MaskGIT)
    from partly masked inputs, 1 to K - 1 tokens visible: an untrained prior must not pull the posterior
    towards random classes. (STORM's linear prior keeps PyTorch's default initialisation, logits of
    standard deviation ~0.6 for unit h.)"""
    cfg = ModelConfig.from_size(size)
    th.manual_seed(0)
    prior = make_prior(name, cfg)
    hidden = th.randn(64, cfg.hidden_dim)
    inputs = [prior.log_probs]
    if isinstance(prior, MaskGITPrior):
        tokens = th.randint(cfg.latent_classes, (64, cfg.latent_tokens))
        visible = th.arange(cfg.latent_tokens) < th.arange(64)[:, None] % (cfg.latent_tokens - 1) + 1
        assert int(visible.sum(1).min()) >= 1 and int(visible.sum(1).max()) == cfg.latent_tokens - 1
        inputs.append(lambda h: prior(h, tokens.masked_fill(~visible, prior.mask_id)))
    with th.no_grad():
        for log_probs in (forward(hidden) for forward in inputs):
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


class CopyPrior(MaskGITPrior):
    """A MaskGIT-like prior whose sampler distribution can be enumerated: 3 tokens of 3 classes.

    Every masked token puts ``PEAK`` on one class: the token at the lowest visible position (it copies a
    neighbour), or with nothing visible its own position's class in ``alone``; the rest is spread evenly.
    """

    K, C, PEAK = 3, 3, 0.8

    def __init__(self, alone: tuple[int, ...], decode: DecodeSchedule, peak: float = PEAK) -> None:
        super().__init__(self.K, self.K, self.C, unimix=0.0, dim=8, layers=1, heads=1, ffn_dim=8, decode=decode)
        self.alone, self.peak = th.tensor(alone), peak

    def logits(self, hidden: th.Tensor, tokens: th.Tensor) -> th.Tensor:
        visible = tokens != self.mask_id
        copied = tokens.gather(1, visible.long().argmax(1, keepdim=True))  # the lowest visible position
        target = th.where(visible.any(1, keepdim=True), copied, self.alone)
        return math.log(self.peak * (self.C - 1) / (1 - self.peak)) * th.nn.functional.one_hot(target, self.C).float()


STATES = th.cartesian_prod(*[th.arange(CopyPrior.C)] * CopyPrior.K)  # every latent, (C^K, K)


def enumerate_orders(num_chunks: int) -> th.Tensor:
    """The chunk of every position for each of the K! equally likely orders of :func:`random_chunks`, (K!, K)."""
    rank = th.tensor(list(itertools.permutations(range(CopyPrior.K))))
    return rank * num_chunks // CopyPrior.K


def draft_probs(prior: CopyPrior, chunks: th.Tensor) -> th.Tensor:
    """Probability of every latent of :data:`STATES` under a draft in the order ``chunks`` (K,)."""
    log_p = th.zeros(len(STATES))
    for i in range(int(chunks.max()) + 1):
        log_probs = prior(th.zeros(len(STATES), prior.K), STATES.masked_fill(chunks >= i, prior.mask_id))
        log_p += log_probs.gather(-1, STATES[..., None]).squeeze(-1)[:, chunks == i].sum(-1)
    return log_p.exp()


def revise_matrix(prior: CopyPrior, chunks: th.Tensor) -> th.Tensor:
    """Transition matrix between the latents of :data:`STATES` of one revise round in the order ``chunks`` (K,)."""
    matrix = th.eye(len(STATES))
    for i in range(int(chunks.max()) + 1):
        positions = chunks == i
        log_probs = prior(th.zeros(len(STATES), prior.K), STATES.masked_fill(positions, prior.mask_id))
        to = log_probs[:, th.arange(prior.K)[None], STATES]  # (from, to, K): log p(to_k | from, chunk masked)
        same = (STATES[None, :, ~positions] == STATES[:, None, ~positions]).all(-1)
        matrix = matrix @ (to[..., positions].sum(-1).exp() * same)
    return matrix


def sampler_probs(prior: CopyPrior) -> th.Tensor:
    """The distribution :meth:`MaskGITPrior.sample` draws from, by enumerating orders and latents, (C^K,)."""
    decode = prior.decode
    probs = th.stack([draft_probs(prior, chunks) for chunks in enumerate_orders(decode.draft_steps)]).mean(0)
    if decode.revise_rounds:
        round_matrix = th.stack([revise_matrix(prior, chunks) for chunks in enumerate_orders(decode.revise_steps)]).mean(0)
        probs = probs @ th.linalg.matrix_power(round_matrix, decode.revise_rounds)
    return probs


def empirical_probs(prior: CopyPrior, samples: int, gen: th.Generator) -> th.Tensor:
    drawn = prior.sample(th.zeros(samples, prior.K), gen)
    index = (drawn * prior.C ** th.arange(prior.K - 1, -1, -1)).sum(-1)  # row of STATES (cartesian order)
    return th.bincount(index, minlength=len(STATES)).float() / samples


def posterior_kl(posterior: th.Tensor, probs: th.Tensor) -> float:
    """``KL(q || p)`` of a factorised ``q`` (one row of log-probabilities ``(K, C)``) and ``p`` over :data:`STATES`."""
    log_q = posterior.gather(-1, STATES.T).sum(0)
    return float((log_q.exp() * (log_q - probs.log())).sum())


@pytest.mark.parametrize("draft_steps", [2, 3])
def test_draft_kl_is_an_upper_bound_that_tightens_with_orders(draft_steps: int) -> None:
    """A draft samples a mixture over decoding orders. Here each order puts most mass on one all-equal latent
    (the first position's class, copied), the mixture spreads it over three: averaging the per-order chain-rule
    KL (the old metric) overstates ``KL(q || p_mix)`` by about 0.5 nats; the log-mean-exp over orders is above the
    enumerated KL for every number of orders and falls to it as they grow."""
    prior = CopyPrior(alone=(0, 1, 2), decode=DecodeSchedule(draft_steps, 1, 0))
    gen = th.Generator().manual_seed(0)
    probs = sampler_probs(prior)
    assert float((empirical_probs(prior, 40_000, gen) - probs).abs().max()) < 0.01  # the enumeration is the sampler
    posterior = th.tensor([0.6, 0.3, 0.1]).log().expand(prior.K, prior.C)
    true_kl = posterior_kl(posterior, probs)
    per_order = [posterior_kl(posterior, draft_probs(prior, chunks)) for chunks in enumerate_orders(draft_steps)]
    order_averaged = sum(per_order) / len(per_order)
    assert prior.kl_kind == "upper_bound" and order_averaged > true_kl + 0.5
    rows = 20_000
    hidden, posteriors = th.zeros(rows, prior.K), posterior.expand(rows, prior.K, prior.C)
    with th.no_grad():
        bounds = [float(prior.sampler_kl(posteriors, hidden, orders, gen).mean()) for orders in (1, 4, 32)]
    assert bounds[0] == pytest.approx(order_averaged, abs=0.05)  # one order: the old bound
    assert bounds[0] > bounds[1] > bounds[2] > true_kl - 0.05  # 0.05: the Monte Carlo error of 20k rows
    assert bounds[2] - true_kl < 0.15 * (order_averaged - true_kl)
    # The entropy of the draft's samples, from samples of the prior: an upper bound in the same way.
    true_entropy = float(-(probs * probs.log()).sum())
    with th.no_grad():
        entropies = [float(prior.sampler_entropy(hidden, orders, gen).mean()) for orders in (1, 32)]
    assert entropies[0] > true_entropy + 0.3 and true_entropy - 0.05 < entropies[1] < true_entropy + 0.1


def test_revise_rounds_report_no_kl() -> None:
    """A prior that copies its neighbours: teacher-forced with the real tokens everywhere else, each token is
    predicted almost perfectly (the pseudo-likelihood the old metric logged as the KL, about 0), while
    imagination only ever samples class 0 (all-[MASK] says 0, and the revise round copies it): the true KL
    to a posterior on class 1 is large. No KL is reported for such a schedule."""
    decode = DecodeSchedule(draft_steps=1, revise_steps=3, revise_rounds=1)
    prior = CopyPrior(alone=(0, 0, 0), decode=decode, peak=0.99)
    gen = th.Generator().manual_seed(0)
    probs = sampler_probs(prior)
    assert float((empirical_probs(prior, 40_000, gen) - probs).abs().max()) < 0.01
    posterior = th.tensor([0.005, 0.99, 0.005]).log().expand(prior.K, prior.C)
    true_kl = posterior_kl(posterior, probs)
    tokens = th.ones(1, prior.K, dtype=th.long)  # the posterior's sample
    pseudo = sum(
        float(
            categorical_kl(
                posterior[k], prior(th.zeros(1, prior.K), tokens.masked_fill(th.arange(prior.K) == k, prior.mask_id))[0, k]
            )
        )
        for k in range(prior.K)
    )
    assert true_kl > 4.0 and pseudo < 0.1
    assert prior.kl_kind == "not_available"
    with pytest.raises(ValueError, match="revise rounds"):
        prior.sampler_kl(posterior[None], th.zeros(1, prior.K))
    with pytest.raises(ValueError, match="revise rounds"):
        prior.sampler_entropy(th.zeros(1, prior.K))


@pytest.mark.parametrize("decode", [DecodeSchedule(1, 1, 1), DecodeSchedule(4, 1, 3), DecodeSchedule(1, 1, 0)])
@pytest.mark.parametrize("name", ["maskgit", "mlp"])
def test_one_pass_kl_and_entropy_are_exact(name: str, decode: DecodeSchedule) -> None:
    """One-pass priors: the per-token KLs and entropies of the all-[MASK] distribution, and the joint
    log-probability of independent tokens; the entropy matches the mean of -log p over the prior's samples."""
    th.manual_seed(0)
    prior = make_prior(name, ModelConfig.from_size("tiny"), decode)
    k, c = prior.num_tokens, prior.num_classes
    gen = th.Generator().manual_seed(0)
    hidden, posterior = th.randn(4, prior.hidden_dim, generator=gen), th.randn(4, k, c, generator=gen).log_softmax(-1)
    with th.no_grad():
        log_probs = prior.log_probs(hidden)
        assert prior.kl_kind == "exact"
        th.testing.assert_close(prior.sampler_kl(posterior, hidden), categorical_kl(posterior, log_probs).sum(-1))
        entropy = prior.sampler_entropy(hidden)
        th.testing.assert_close(entropy, -(log_probs.exp() * log_probs).sum((-2, -1)))
        samples = prior.sample(hidden.repeat(5000, 1), gen)
        surprise = -prior.sampler_log_prob(hidden.repeat(5000, 1), samples).view(5000, 4).mean(0)
    th.testing.assert_close(surprise, entropy, atol=0.1, rtol=0.0)
    with pytest.raises(ValueError, match="num_orders"):
        prior.sampler_log_prob(hidden, samples[:4], num_orders=0)


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
        chain = prior.sampler_kl(posterior, hidden[:256], 4, gen).mean()
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


@pytest.mark.filterwarnings("ignore:draft-and-revise with several chunks")
def test_kl_on_all_tokens_is_rejected_where_the_prior_sees_its_target() -> None:
    """prior_kl_positions="all" scores the prior on every token: not allowed where training shows tokens of
    z_{t+1} ("cosine", "decode" with several passes); "reference" shows z_t's, one-pass "decode" none."""
    leaking = [("cosine", PAPER_DECODE, "'cosine'"), ("decode", DecodeSchedule(2, 2, 1), r"'decode' and a 4-pass decoding")]
    for schedule, decode, match in leaking:
        cfg = ModelConfig.from_size("tiny", maskgit_schedule=schedule, prior_kl_positions="all")
        with pytest.raises(ValueError, match=rf"prior_kl_positions='all' with maskgit_schedule={match}.* sees its target"):
            make_prior("maskgit", cfg, decode)
        make_prior("maskgit", dataclasses.replace(cfg, prior_kl_positions="masked"), decode)
        make_prior("mlp", cfg, decode)
    for schedule, decode in (("reference", DecodeSchedule(2, 2, 1)), ("decode", DecodeSchedule(4, 1, 2))):
        make_prior("maskgit", ModelConfig.from_size("tiny", maskgit_schedule=schedule, prior_kl_positions="all"), decode)
    kwargs = dict(draft_steps=2, revise_steps=2, policy_kwargs=dict(size="tiny", prior_kl_positions="all"))
    with pytest.raises(ValueError, match="prior_kl_positions='all' with maskgit_schedule='decode'"):
        GITSTORM("MlpPolicy", "CartPole-v1", **kwargs)


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


class ContextPrior(MaskGITPrior):
    """A stub whose prediction depends on its inputs: (almost) all mass on the target that ``h_t`` holds in
    its first ``K`` features, as long as every visible token agrees with it; on the next class otherwise."""

    def __init__(self, decode: DecodeSchedule) -> None:
        super().__init__(H, K, C, unimix=0.0, dim=16, layers=1, heads=1, ffn_dim=16, decode=decode)

    def logits(self, hidden: th.Tensor, tokens: th.Tensor) -> th.Tensor:
        target = hidden[:, :K].long()
        agree = ((tokens == target) | (tokens == self.mask_id)).all(-1, keepdim=True)
        return 50.0 * th.nn.functional.one_hot(th.where(agree, target, (target + 1) % C), C).float()


@pytest.mark.parametrize("draft, revise, rounds", [(1, 1, 1), (4, 1, 0), (1, 4, 2), (8, 2, 3)])
def test_peaked_prior_recovers_target(draft: int, revise: int, rounds: int) -> None:
    """Every pass gets its own row's h_t and the tokens sampled so far: a wrong row or a stale token would
    turn the stub's prediction to another class."""
    target = th.randint(C, (32, K), generator=th.Generator().manual_seed(1))
    hidden = th.cat([target.float(), th.zeros(32, H - K)], 1)
    prior = ContextPrior(DecodeSchedule(draft, revise, rounds))
    assert th.equal(prior.sample(hidden), target)
    wrong = target.clone()
    wrong[:, 0] = (wrong[:, 0] + 3) % C  # one visible token disagrees: everything else moves on
    assert th.equal(prior.resample(hidden, wrong, th.arange(K) > 0)[0], th.cat([wrong[:, :1], (target[:, 1:] + 1) % C], 1))


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
