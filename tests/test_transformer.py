"""The causal sequence model: key/value cache, episode segments and positions."""

from __future__ import annotations

import torch as th

from sb3_gitstorm.transformer import CausalTransformer, segment_positions


def model() -> CausalTransformer:
    th.manual_seed(0)
    return CausalTransformer(input_dim=10, dim=32, layers=2, heads=4, ffn_dim=64, dropout=0.1, max_length=16).eval()


def test_segment_positions() -> None:
    starts = th.tensor([[False, False, True, False, False, True], [True, False, False, False, False, False]])
    segments, positions = segment_positions(starts)
    assert segments.tolist() == [[0, 0, 1, 1, 1, 2], [1, 1, 1, 1, 1, 1]]
    assert positions.tolist() == [[0, 1, 0, 1, 2, 0], [0, 1, 2, 3, 4, 5]]


def test_kv_cache_matches_full_forward() -> None:
    """Feeding tokens one by one through the cache gives the same h as one causal pass."""
    net = model()
    x = th.randn(3, 9, 10)
    starts = th.zeros(3, 9, dtype=th.bool)
    starts[1, 4] = True
    segments, positions = segment_positions(starts)
    with th.no_grad():
        full = net(x, segments, positions)
        cache = net.new_cache(3, 9, x.device)
        prefill = net(x[:, :5], segments[:, :5], positions[:, :5], cache)
        steps = [net(x[:, t : t + 1], segments[:, t : t + 1], positions[:, t : t + 1], cache) for t in range(5, 9)]
    th.testing.assert_close(th.cat([prefill, *steps], 1), full, rtol=1e-4, atol=1e-5)
    assert cache.length == 9


def test_no_attention_across_episode_boundaries_or_to_the_future() -> None:
    net = model()
    x = th.randn(1, 8, 10)
    starts = th.zeros(1, 8, dtype=th.bool)
    starts[0, 5] = True
    segments, positions = segment_positions(starts)
    changed = x.clone()
    changed[0, :5] = th.randn(5, 10)  # the previous episode
    changed[0, 7] = th.randn(10)  # the future of step 6
    with th.no_grad():
        a = net(x, segments, positions)
        b = net(changed, segments, positions)
    th.testing.assert_close(a[0, 5:7], b[0, 5:7])
    assert not th.allclose(a[0, :5], b[0, :5])


def test_episode_start_restarts_positions() -> None:
    """A step after an episode start sees exactly what the same step at the start of a window sees."""
    net = model()
    x = th.randn(1, 6, 10)
    starts = th.zeros(1, 6, dtype=th.bool)
    starts[0, 3] = True
    with th.no_grad():
        inside = net(x, *segment_positions(starts))[0, 3:]
        alone = net(x[:, 3:], *segment_positions(th.zeros(1, 3, dtype=th.bool)))[0]
    th.testing.assert_close(inside, alone, rtol=1e-4, atol=1e-5)
