"""Symlog two-hot, unimix sampling and the free-bits KL balance."""

from __future__ import annotations

import pytest
import torch as th

from sb3_gitstorm.distributions import (
    SymlogTwoHot,
    kl_balance,
    sample_categorical,
    sample_one_hot,
    sample_unimix,
    symexp,
    symlog,
    unimix_log_probs,
)


def test_symlog_inverse() -> None:
    x = th.tensor([-1e4, -3.0, -0.5, 0.0, 0.5, 3.0, 1e4])
    th.testing.assert_close(symexp(symlog(x)), x)


def test_twohot_encodes_the_exact_value() -> None:
    twohot = SymlogTwoHot(255, -20.0, 20.0)
    target = th.tensor([-250.0, -1.0, 0.0, 0.3, 7.0, 1234.0])
    enc = twohot.encode(target)
    assert enc.shape == (6, 255)
    th.testing.assert_close(enc.sum(-1), th.ones(6))
    assert int((enc > 0).sum(-1).max()) <= 2
    th.testing.assert_close(symexp(enc @ twohot.bins), target, rtol=1e-4, atol=1e-4)
    # The decoded mean of logits equal to log(two-hot) is the target itself.
    th.testing.assert_close(twohot.mean(th.log(enc + 1e-12)), target, rtol=1e-3, atol=1e-3)


def test_twohot_loss_is_cross_entropy_against_the_encoding() -> None:
    twohot = SymlogTwoHot(63, -20.0, 20.0)
    logits, target = th.randn(5, 63), th.randn(5) * 10
    expected = -(twohot.encode(target) * th.log_softmax(logits, -1)).sum(-1)
    th.testing.assert_close(twohot.loss(logits, target), expected)


def test_sampling_follows_the_distribution() -> None:
    gen = th.Generator().manual_seed(0)
    logits = th.tensor([0.0, 1.0, 2.0, -1.0]).expand(100_000, 4)
    freq = th.bincount(sample_categorical(logits, gen), minlength=4) / 100_000
    th.testing.assert_close(freq, th.softmax(logits[0], -1), atol=0.01, rtol=0)
    mixed = th.bincount(sample_unimix(logits * 20, 0.2, gen), minlength=4) / 100_000
    th.testing.assert_close(mixed, unimix_log_probs(logits[0] * 20, 0.2).exp(), atol=0.01, rtol=0)


def test_straight_through_sample() -> None:
    log_probs = unimix_log_probs(th.randn(3, 4, 5, requires_grad=True), 0.01)
    sample = sample_one_hot(log_probs)
    th.testing.assert_close(sample.detach().sum(-1), th.ones(3, 4))
    assert set(sample.detach().round().unique().tolist()) == {0.0, 1.0}
    sample.sum().backward()  # gradients reach the logits through the probabilities
    assert th.equal(sample_one_hot(log_probs.detach(), deterministic=True).argmax(-1), log_probs.argmax(-1))


@pytest.mark.parametrize("free_bits", [0.0, 1.0, 100.0])
def test_kl_balance(free_bits: float) -> None:
    post = th.log_softmax(th.randn(6, 4, 5), -1).requires_grad_()
    prior = th.log_softmax(th.randn(6, 4, 5), -1).requires_grad_()
    token_mask = th.rand(6, 4) < 0.5
    step_mask = th.tensor([True, True, False, True, True, True])
    dyn, _, kl = kl_balance(post, prior, token_mask, step_mask, free_bits)
    full = (post.exp() * (post - prior)).sum(-1)
    expected = (full * (token_mask & step_mask[:, None])).sum() / 5
    th.testing.assert_close(kl, expected.detach())
    th.testing.assert_close(dyn.detach(), th.clamp(expected, min=free_bits).detach())
    dyn.backward()
    assert post.grad is None  # KL_dyn only trains the prior
    if free_bits < expected.item():
        assert prior.grad is not None and prior.grad.abs().sum() > 0
