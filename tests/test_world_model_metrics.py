"""World-model quality metrics: PSNR / SSIM / Fréchet distance / perplexity, windows, and the world_model_eval.py script."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from PIL import Image

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.envs.toy import JumpingDotEnv
from sb3_gitstorm.world_model_metrics import (
    Episode,
    FeasibilityEvaluator,
    OpenLoopEvaluator,
    OpenLoopPrediction,
    Windows,
    collect_episode,
    frechet_distance,
    gather_windows,
    gaussian_frechet_distance,
    perplexity,
    psnr,
    ssim,
    window_starts,
)
from tests.conftest import DotEnv, load_benchmark


def load_script():
    return load_benchmark("world_model_eval")


def test_psnr() -> None:
    target = th.zeros(2, 3, 8, 8)
    prediction = target + th.tensor([0.1, 0.0]).view(2, 1, 1, 1)  # MSE 0.01, then identical
    th.testing.assert_close(psnr(prediction, target), th.tensor([20.0, 100.0]))
    th.testing.assert_close(psnr(prediction * 255, target, data_range=255.0), th.tensor([20.0, 100.0]))


def test_ssim_matches_the_reference_and_the_closed_form() -> None:
    y, x = th.meshgrid(th.linspace(0, 1, 32, dtype=th.float64), th.linspace(0, 1, 40, dtype=th.float64), indexing="ij")
    a = th.stack([0.5 + 0.4 * th.sin(6 * x + c) * th.cos(4 * y) for c in range(3)])[None]
    b = (0.8 * a + 0.1 + 0.05 * th.sin(40 * x + 25 * y)).clamp(0, 1)
    # scikit-image 0.26: structural_similarity(a, b, data_range=1, channel_axis=0, gaussian_weights=True,
    # sigma=1.5, use_sample_covariance=False)
    assert float(ssim(a, b)) == pytest.approx(0.7929467803480815, abs=1e-9)
    assert float(ssim(b, a)) == pytest.approx(float(ssim(a, b)))
    assert float(ssim(a, a)) == pytest.approx(1.0)
    # Two constant images: only the luminance term remains, (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    c1 = 0.01**2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert float(ssim(th.full((1, 1, 16, 16), 0.2), th.full((1, 1, 16, 16), 0.6))) == pytest.approx(expected, rel=1e-6)
    noisy = [float(ssim(a, (a + sigma * th.randn_like(a)).clamp(0, 1))) for sigma in (0.01, 0.1, 0.3)]
    assert noisy == sorted(noisy, reverse=True)
    with pytest.raises(ValueError, match="smaller than"):
        ssim(th.zeros(1, 1, 8, 8), th.zeros(1, 1, 8, 8))


def test_frechet_distance_of_gaussians() -> None:
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    mean_a, mean_b = np.array([0.0, 1.0, -1.0, 2.0]), np.array([0.5, 1.0, 0.0, 2.0])
    var_a, var_b = np.array([1.0, 2.0, 0.5, 3.0]), np.array([4.0, 1.0, 0.5, 0.25])
    # Covariances with the same eigenvectors: d = |mean_a - mean_b|^2 + sum (sqrt(var_a) - sqrt(var_b))^2.
    cov_a, cov_b = ((rotation * var) @ rotation.T for var in (var_a, var_b))
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert gaussian_frechet_distance(mean_a, cov_a, mean_b, cov_b) == pytest.approx(expected, rel=1e-9)
    assert gaussian_frechet_distance(mean_b, cov_b, mean_a, cov_a) == pytest.approx(expected, rel=1e-9)
    assert gaussian_frechet_distance(mean_a, cov_a, mean_a, cov_a) == pytest.approx(0.0, abs=1e-9)
    # Identity against a full covariance: tr(cov^(1/2)) = sum of the square roots of its eigenvalues.
    assert gaussian_frechet_distance(mean_a, np.eye(4), mean_a, cov_b) == pytest.approx(np.sum((1 - np.sqrt(var_b)) ** 2))
    # From samples: the fitted Gaussians converge to the true ones.
    n = 200_000
    features_a = rng.multivariate_normal(mean_a, cov_a, size=n)
    features_b = rng.multivariate_normal(mean_b, cov_b, size=n)
    assert frechet_distance(features_a, features_b) == pytest.approx(expected, rel=0.02)
    assert frechet_distance(features_a[: n // 2], features_a[n // 2 :]) == pytest.approx(0.0, abs=5e-3)
    with pytest.raises(ValueError, match="at least two"):
        frechet_distance(features_a[:1], features_b)


def test_perplexity() -> None:
    uniform = th.full((5, 8), 1 / 8).log()
    assert perplexity(uniform) == pytest.approx(8.0)
    two_classes = th.tensor([0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).log().expand(5, 8)  # log 0 = -inf is fine
    assert perplexity(two_classes) == pytest.approx(2.0)
    # exp of the *mean* entropy over tokens: exp((log 8 + log 2) / 2) = 4
    assert perplexity(th.stack([uniform, two_classes], 1)) == pytest.approx(4.0)


@pytest.mark.parametrize("decode, kind", [((1, 1, 1), "exact"), ((2, 1, 0), "upper_bound"), ((1, 2, 1), "not_available")])
def test_prior_kl_follows_what_imagination_samples(decode: tuple[int, int, int], kind: str, fast_kwargs: dict) -> None:
    """The prior KL and perplexity are those of the distribution the decoding schedule samples from: exact for one
    pass (no decoding orders involved), a bound estimated over decoding orders for a draft alone, and not
    reported (None) with revise rounds, whose samples have no tractable likelihood."""
    draft, revise, rounds = decode
    model = GITSTORM("MlpPolicy", "CartPole-v1", draft_steps=draft, revise_steps=revise, revise_rounds=rounds, **fast_kwargs)
    episodes = [collect_episode(gym.make("CartPole-v1"), seed=i) for i in range(2)]
    windows = gather_windows(episodes, window_starts(episodes, 2, 3, stride=2), 2, 3)

    def evaluate(orders: int) -> dict:
        evaluator = OpenLoopEvaluator(model, context=2, horizon=3, samples=2, prior_orders=orders)
        th.manual_seed(0)
        evaluator.add(windows)
        evaluator.add(windows)  # the second batch imagines the same whatever the orders: they have their own stream
        return evaluator.summary()

    metrics = evaluate(1)
    assert metrics["prior_kl_kind"] == kind
    if kind == "not_available":
        assert metrics["prior_kl"] is None and metrics["prior_kl_per_step"] is None and metrics["prior_perplexity"] is None
        assert 1.0 <= metrics["posterior_perplexity"] <= 8.0
        return
    assert metrics["prior_kl"] > 0 and 1.0 <= metrics["prior_perplexity"] <= 8.0
    more_orders = evaluate(8)
    assert more_orders["mse_per_step"] == metrics["mse_per_step"]
    if kind == "exact":
        assert more_orders["prior_kl"] == metrics["prior_kl"] and more_orders["prior_perplexity"] == metrics["prior_perplexity"]
    else:
        assert more_orders["prior_kl"] != metrics["prior_kl"]
    with pytest.raises(ValueError, match="prior_orders"):
        OpenLoopEvaluator(model, context=2, horizon=3, prior_orders=0)


def make_episode(length: int, terminated: bool) -> Episode:
    return Episode(
        observations=np.arange(length + 1, dtype=np.float32)[:, None],
        actions=np.arange(length) % 2,
        rewards=np.arange(length, dtype=np.float32),
        terminated=np.arange(length) == length - 1 if terminated else np.zeros(length, bool),
    )


def test_windows_count_back_from_the_end_and_align_rewards() -> None:
    episodes = [make_episode(10, terminated=True), make_episode(3, terminated=False), make_episode(7, terminated=False)]
    context, horizon = 3, 4  # 6 steps and 7 frames per window
    starts = window_starts(episodes, context, horizon, stride=2)
    assert starts == [(0, 4), (0, 2), (0, 0), (2, 1)]  # the 3-step episode is too short
    windows = gather_windows(episodes, starts, context, horizon)
    assert windows.observations.shape == (4, 7, 1) and windows.actions.shape == (4, 6)
    np.testing.assert_array_equal(windows.observations[0, :, 0], np.arange(4, 11))
    # Imagined step k takes action context - 1 + k: its reward and termination are those of that step.
    np.testing.assert_array_equal(windows.rewards[0], [6, 7, 8, 9])
    np.testing.assert_array_equal(windows.terminated[0], [False, False, False, True])
    np.testing.assert_array_equal(windows.episode_starts, [False, False, True, False])


def test_collect_episode_records_every_observation() -> None:
    episode = collect_episode(DotEnv(max_steps=6), seed=0)
    assert len(episode) == len(episode.actions) == len(episode.terminated) <= 6
    assert episode.observations.shape == (len(episode) + 1, 64, 64, 3)
    again = collect_episode(DotEnv(max_steps=6), seed=0)
    np.testing.assert_array_equal(episode.observations, again.observations)  # the seed fixes the episode


def test_reward_explained_variance(monkeypatch: pytest.MonkeyPatch, fast_kwargs: dict) -> None:
    """1 for exact rewards, 0 for the mean reward, negative below it; per horizon step and overall."""
    model = GITSTORM("MlpPolicy", "CartPole-v1", **fast_kwargs)
    n, h = 4, 3
    real = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [2.0, 0.0, 1.0], [1.0, 2.0, 0.0]])

    def evaluate(predicted: np.ndarray, rewards: np.ndarray = real) -> dict:
        windows = Windows(np.zeros((n, 2 + h, 4)), np.zeros((n, 1 + h)), rewards, np.zeros((n, h), bool), np.zeros(n, bool))
        prediction = OpenLoopPrediction(
            real=th.zeros(n, h, 4),
            predicted=th.zeros(n, 1, h, 4),
            reconstructed=th.zeros(n, h, 4),
            rewards=th.as_tensor(predicted, dtype=th.float32)[:, None],
            continues=th.ones(n, 1, h),
            prior_kl=th.zeros(n, 1, h),
            prior_entropy=th.full((n, 1, h), math.log(8.0)),
            posterior_log_probs=th.full((n, h, 8, 8), -math.log(8.0)),
        )
        evaluator = OpenLoopEvaluator(model, context=2, horizon=h)
        monkeypatch.setattr(evaluator, "predict", lambda _: prediction)
        evaluator.add(windows)
        return evaluator.summary()

    exact = evaluate(real)
    assert exact["reward_explained_variance"] == pytest.approx(1.0)
    assert exact["reward_explained_variance_per_step"] == pytest.approx([1.0, 1.0, 1.0])
    assert "real_reward" not in exact and "real_reward_square" not in exact  # accumulators, not metrics
    mean = evaluate(np.ones_like(real))  # every column of ``real`` has mean 1
    assert mean["reward_explained_variance"] == pytest.approx(0.0)
    assert mean["reward_explained_variance_per_step"] == pytest.approx([0.0, 0.0, 0.0])
    assert mean["reward_abs_error"] == pytest.approx(0.5)
    shifted = evaluate(real + 1.0)  # error 1 everywhere, real variance 0.5
    assert shifted["reward_explained_variance"] == pytest.approx(1.0 - 1.0 / 0.5)
    assert evaluate(real, rewards=np.ones((n, h)))["reward_explained_variance"] is None  # no spread: undefined


def test_feasibility_counts_imagined_frames_against_the_frame_before_them(
    monkeypatch: pytest.MonkeyPatch, fast_kwargs: dict
) -> None:
    """Imagined frames are judged after the previous imagined frame (the last real one at step 1), reconstructions
    after the previous real frame; a rollout stays feasible only while all its frames are."""
    env = JumpingDotEnv(size=32, cells=4, jump=1, outcomes=4)
    model = GITSTORM("CnnPolicy", env, **fast_kwargs)
    episode = collect_episode(env, seed=0)
    n, s, h, c = 3, 2, 3, 2
    windows = gather_windows([episode], [(0, 0), (0, 10), (0, 20)], c, h)
    real = th.as_tensor(windows.observations[:, c:]).permute(0, 1, 4, 2, 3).float() / 255.0  # (N, H, 3, 32, 32)
    predicted = real[:, None].repeat(1, s, 1, 1, 1, 1)
    predicted[0, 1, 1] = 0.0  # window 0, sample 1: no dot at step 2 ...
    predicted[1, 0, 0] = predicted[1, 0, 0].roll(8, -1)  # window 1, sample 0: the dot one cell off at step 1
    log_probs = th.full((n, s, h, 8, 8), -math.log(8.0))
    reconstructed = real.clone()
    reconstructed[2, 2] = 1.0  # a white frame
    prediction = OpenLoopPrediction(
        real, predicted, reconstructed, th.zeros(n, s, h), th.ones(n, s, h), None, None, log_probs[:, 0]
    )  # fmt: skip
    evaluator = FeasibilityEvaluator(model, c, h, env.feasible, samples=s)
    monkeypatch.setattr(evaluator, "predict", lambda _: prediction)
    evaluator.add(windows)
    summary = evaluator.summary()
    # Step 1: one bad frame of 6. Step 2: window 0 sample 1 shows no dot, window 1 sample 0 follows a misplaced dot
    # (checked against it, the real next dot is not one jump away, unless by chance) ...
    moved = env.locate(predicted[1, 0, 0].numpy())
    second = env.locate(real[1, 1].numpy()) in env.targets(moved, windows.actions[1, c]) if moved else False
    assert summary["feasible_per_step"] == pytest.approx([5 / 6, (4 + second) / 6, 5 / 6])  # ... step 3 after no dot
    assert summary["feasible_rollout_per_step"] == pytest.approx([5 / 6, 4 / 6, 4 / 6])
    assert summary["reconstruction_feasible_per_step"] == pytest.approx([1.0, 1.0, 2 / 3])
    assert summary["feasible"] == pytest.approx((14 + second) / 18)
    with pytest.raises(ValueError, match="must see images"):
        FeasibilityEvaluator(GITSTORM("MlpPolicy", "CartPole-v1", **fast_kwargs), c, h, env.feasible)


def test_vector_model_through_the_script(tmp_path: Path, fast_kwargs: dict) -> None:
    GITSTORM("MlpPolicy", "CartPole-v1", seed=0, **fast_kwargs).learn(40).save(tmp_path / "storm.zip")
    script = load_script()
    out = tmp_path / "eval"
    argv = ["--models", str(tmp_path / "storm.zip"), "--env", "CartPole-v1", "--episodes", "2"]
    report = script.main([*argv, "--context", "4", "--horizon", "5", "--samples", "2", "--out", str(out)])
    metrics = report["models"]["storm"]["metrics"]
    assert metrics["psnr"] is None and metrics["ssim_per_step"] is None and metrics["fvd"] is None
    assert len(metrics["mse_per_step"]) == 5 and all(math.isfinite(v) for v in metrics["mse_per_step"])
    assert 1.0 <= metrics["prior_perplexity"] <= 8.0  # tiny models: 8 classes per token
    # Random CartPole episodes end by termination, inside a window unless shorter than one (8 steps).
    assert metrics["terminations"] == sum(length >= 8 for length in report["episode_lengths"]) > 0
    assert any("vector observations" in note for note in report["notes"])
    assert any("FVD skipped" in note for note in report["notes"])
    assert not (out / "storm").exists()  # no pictures of vectors
    assert "reward MAE" in (out / "metrics.md").read_text() and "frame PSNR" not in (out / "metrics.md").read_text()
    assert json.loads((out / "metrics.json").read_text())["models"]["storm"]["prior"] == "maskgit"
    model = GITSTORM.load(tmp_path / "storm.zip")
    with pytest.warns(UserWarning, match="never learned the positions"):
        OpenLoopEvaluator(model, context=4, horizon=6)  # 9 positions, trained on windows of 8
    with pytest.raises(ValueError, match="max_length"):
        OpenLoopEvaluator(model, context=8, horizon=60)


def test_the_script_counts_feasible_frames_where_the_env_has_a_checker(tmp_path: Path, fast_kwargs: dict) -> None:
    env_kwargs = '{"size": 32, "cells": 4, "jump": 1, "outcomes": 4, "max_steps": 12}'
    env = JumpingDotEnv(size=32, cells=4, jump=1, outcomes=4, max_steps=12)
    GITSTORM("CnnPolicy", env, seed=0, **fast_kwargs).learn(40).save(tmp_path / "dot.zip")
    argv = ["--models", str(tmp_path / "dot.zip"), "--env", "gitstorm/JumpingDot-v0", "--env-kwargs", env_kwargs]
    report = load_script().main([*argv, "--episodes", "2", "--context", "2", "--horizon", "3", "--out", str(tmp_path / "eval")])
    metrics = report["models"]["dot"]["metrics"]
    for key in ("feasible", "feasible_rollout", "reconstruction_feasible"):
        assert 0.0 <= metrics[key] <= 1.0 and len(metrics[f"{key}_per_step"]) == 3
    assert "feasible imagined frames ↑" in (tmp_path / "eval" / "metrics.md").read_text()


class FakeI3D(th.nn.Module):
    """Stands in for the I3D TorchScript file: same call, cheap clip statistics as features."""

    def forward(self, x: th.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False) -> th.Tensor:
        return th.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))], 1)


@pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")  # I3D files are TorchScript
def test_gitstorm_vs_storm_end_to_end(tmp_path: Path, fast_kwargs: dict) -> None:
    fast_kwargs["batch_length"] = 9  # trains the 9 positions of context 4 + horizon 6
    models = []
    for prior in ("maskgit", "mlp"):
        model = GITSTORM("CnnPolicy", DotEnv(), prior=prior, seed=0, train_freq=4, **fast_kwargs).learn(256)
        model.save(tmp_path / f"{prior}.zip")
        models.append(str(tmp_path / f"{prior}.zip"))
    th.jit.script(FakeI3D()).save(str(tmp_path / "i3d.pt"))
    out = tmp_path / "eval"
    script = load_script()
    argv = ["--models", *models, "--env", "tests.conftest:DotEnv", "--env-kwargs", '{"max_steps": 16}', "--episodes", "3"]
    argv += ["--context", "4", "--horizon", "6", "--samples", "2", "--i3d", str(tmp_path / "i3d.pt"), "--out", str(out)]
    script.main(argv)

    report = json.loads((out / "metrics.json").read_text())
    assert set(report["models"]) == {"maskgit", "mlp"}
    assert report["windows"] >= 3 and report["settings"]["env_kwargs"] == {"max_steps": 16}
    for name, entry in report["models"].items():
        assert entry["prior"] == name and entry["num_timesteps"] == 256
        metrics = entry["metrics"]
        for key in (
            "mse",
            "psnr",
            "ssim",
            "fvd",
            "reward_abs_error",
            "reward_explained_variance",
            "termination_accuracy",
            "prior_kl",
        ):
            assert math.isfinite(metrics[key]), key
        for key in ("psnr", "ssim", "mse", "prior_kl", "prior_perplexity", "posterior_perplexity"):
            assert len(metrics[f"{key}_per_step"]) == 6 and all(math.isfinite(v) for v in metrics[f"{key}_per_step"])
        assert 0.0 <= metrics["ssim"] <= 1.0 and 0.0 <= metrics["termination_accuracy"] <= 1.0
        assert metrics["fvd"] >= 0.0 and metrics["prior_kl"] >= 0.0 and metrics["prior_kl_kind"] == "exact"
        assert 1.0 <= metrics["prior_perplexity"] <= 8.0 and 1.0 <= metrics["posterior_perplexity"] <= 8.0
        with Image.open(out / name / "rollouts.gif") as gif:
            assert gif.n_frames == 6
        with Image.open(out / name / "rollouts.png") as png:
            # 2 windows, each a real row above 2 sample rows of 32 x 32 frames; 6 columns
            assert png.size == (6 * 34 - 2, 2 * (3 * 34 - 2) + 8)
    table = (out / "metrics.md").read_text()
    assert "| metric | maskgit | mlp |" in table and "FVD" in table and "### frame SSIM per horizon step" in table


def test_add_episodes_adds_every_window_in_batches(fast_kwargs: dict) -> None:
    """``add_episodes`` is ``add`` over the :func:`window_starts` windows, ``batch_size`` at a time."""
    model = GITSTORM("MlpPolicy", "CartPole-v1", **fast_kwargs)
    episodes = [collect_episode(gym.make("CartPole-v1"), seed=i) for i in range(2)]
    starts = window_starts(episodes, 2, 3, stride=2)
    by_hand, batched = (OpenLoopEvaluator(model, context=2, horizon=3, samples=2) for _ in range(2))
    th.manual_seed(0)
    for i in range(0, len(starts), 3):
        by_hand.add(gather_windows(episodes, starts[i : i + 3], 2, 3))
    th.manual_seed(0)
    batched.add_episodes(episodes, stride=2, batch_size=3)
    assert batched.windows == len(starts) > 3
    assert batched.summary() == by_hand.summary()
