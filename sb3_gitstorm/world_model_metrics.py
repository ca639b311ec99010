"""World-model quality: open-loop video prediction, reward / termination prediction and prior perplexity.

Held-out episodes are recorded with a fixed policy and cut into windows of ``context + horizon``
frames. In every window the world model encodes the ``context`` real frames and imagines the next
``horizon`` steps *open loop* with the real actions (:meth:`~sb3_gitstorm.world_model.WorldModel.dream`);
the decoded frames, rewards and terminations are compared with the real ones,
step by step. The latent-space metrics are:

- prior KL (``prior_kl``): ``KL(q(z_{t+1} | o_{t+1}) || p(z_{t+1} | h_t))`` summed over all tokens, from the
  encoder's posterior of the real frame to the distribution imagination samples ``z_{t+1}`` from at the
  imagined ``h_t`` (at step 1, ``h_t`` comes from real frames only: the teacher-forced one-step KL);
- prior perplexity: ``exp`` of that distribution's entropy per latent token (the joint entropy of the
  ``K`` tokens over ``K``), so it lies in ``[1, latent_classes]``; for independent tokens, ``exp`` of the
  tokens' mean entropy;
- posterior perplexity: ``exp`` of the mean entropy of the encoder's ``q(z_t | o_t)`` on the real frames.

How the prior KL and perplexity relate to the sampler's is ``prior_kl_kind`` (the prior's
:attr:`~sb3_gitstorm.priors.LatentPrior.kl_kind`): ``"exact"`` for the one-pass priors (MLP,
MaskGIT 1/1/1); ``"upper_bound"`` for a MaskGIT draft without revise rounds, a mixture over decoding
orders, estimated at a sample of the posterior (KL) and at a fresh sample of the prior (entropy) with a
log-mean-exp over ``prior_orders`` random orders: both upper bounds in expectation, tighter with more
orders (:meth:`~sb3_gitstorm.priors.MaskGITPrior.sampler_log_prob`); ``"not_available"`` with revise
rounds, whose samples have no tractable likelihood: both are None, and only sample-based metrics (the
frames) compare such priors.

FVD is the Fréchet distance between I3D features of the real and of the imagined clips
(:class:`I3DFeatures`, from a user-supplied TorchScript file).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.preprocessing import maybe_transpose

from sb3_gitstorm.distributions import entropy, symexp
from sb3_gitstorm.dreams import rgb
from sb3_gitstorm.gitstorm import GITSTORM

__all__ = [
    "IMAGE_METRICS",
    "PRIOR_METRICS",
    "REWARD_MOMENTS",
    "Episode",
    "FeasibilityChecker",
    "FeasibilityEvaluator",
    "I3DFeatures",
    "OpenLoopEvaluator",
    "OpenLoopPrediction",
    "Windows",
    "check_compatible",
    "collect_episode",
    "entropy",
    "frechet_distance",
    "gather_windows",
    "gaussian_frechet_distance",
    "gaussian_window",
    "perplexity",
    "psnr",
    "rollout_pictures",
    "ssim",
    "tile",
    "window_starts",
]

# ------------------------------------------------------------------------------------------- metrics

IMAGE_METRICS = ("psnr", "ssim", "reconstruction_psnr", "reconstruction_ssim")  # None for vector models
PRIOR_METRICS = ("prior_kl", "prior_perplexity")  # None where the prior's kl_kind is "not_available"
REWARD_MOMENTS = ("real_reward", "real_reward_square")  # accumulated for the explained variance, not reported


def psnr(prediction: th.Tensor, target: th.Tensor, data_range: float = 1.0) -> th.Tensor:
    """Peak signal-to-noise ratio in dB of each image.

    Parameters
    ----------
    prediction, target : th.Tensor
        ``(N, *shape)`` images with values in ``[0, data_range]``.
    data_range : float
        Largest possible value.

    Returns
    -------
    th.Tensor
        ``(N,)``; identical images give 100 dB (the MSE is clamped at ``1e-10 * data_range**2``).
    """
    mse = (prediction - target).square().flatten(1).mean(1).clamp(min=1e-10 * data_range**2)
    return 10.0 * th.log10(data_range**2 / mse)


def gaussian_window(size: int, sigma: float) -> th.Tensor:
    """Normalised 1-D Gaussian kernel ``(size,)``."""
    x = th.arange(size, dtype=th.float64) - (size - 1) / 2
    kernel = th.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def ssim(
    prediction: th.Tensor,
    target: th.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> th.Tensor:
    """Structural similarity (Wang et al., 2004) of each image.

    Local statistics use a Gaussian window (11 x 11, sigma 1.5) over the valid positions only, the
    stabilising constants are ``(k1 * L)**2`` and ``(k2 * L)**2`` with ``L = data_range``; the SSIM map
    is averaged over positions and channels.

    Parameters
    ----------
    prediction, target : th.Tensor
        ``(N, C, H, W)`` images with values in ``[0, data_range]``.

    Returns
    -------
    th.Tensor
        ``(N,)``, in ``[-1, 1]``; 1 for identical images.
    """
    if prediction.shape != target.shape or prediction.dim() != 4:
        raise ValueError(f"ssim needs two (N, C, H, W) batches of the same shape, got {prediction.shape} and {target.shape}")
    channels, height, width = prediction.shape[1:]
    if min(height, width) < window_size:
        raise ValueError(f"images of {height}x{width} are smaller than the {window_size}x{window_size} SSIM window")
    # float64: the variances are differences of nearly equal numbers.
    x, y = prediction.double(), target.double()
    kernel = gaussian_window(window_size, sigma).to(x.device)
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)

    def blur(image: th.Tensor) -> th.Tensor:  # separable Gaussian filter, valid positions only
        return F.conv2d(F.conv2d(image, rows, groups=channels), cols, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1).to(prediction.dtype)


def perplexity(log_probs: th.Tensor) -> float:
    """``exp`` of the mean entropy of categoricals ``(..., C)``: the effective number of classes, in ``[1, C]``."""
    return float(entropy(log_probs).mean().exp())


def gaussian_frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Fréchet (2-Wasserstein squared) distance between ``N(mean_a, cov_a)`` and ``N(mean_b, cov_b)``.

    ``|mean_a - mean_b|^2 + tr(cov_a) + tr(cov_b) - 2 tr((cov_a cov_b)^(1/2))``, where
    ``tr((A B)^(1/2))`` is the sum of the square roots of the eigenvalues of the symmetric PSD
    matrix ``A^(1/2) B A^(1/2)`` (no complex ``sqrtm`` needed).
    """
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    values, vectors = np.linalg.eigh(cov_a)
    sqrt_a = (vectors * np.sqrt(values.clip(min=0.0))) @ vectors.T
    cross = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clip(min=0.0)
    diff = np.asarray(mean_a, np.float64) - np.asarray(mean_b, np.float64)
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.sqrt(cross).sum())


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of features ``(N_a, D)`` and ``(N_b, D)`` (FID / FVD)."""
    stats = []
    for features in (features_a, features_b):
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"need at least two feature vectors (N, D) per set, got shape {features.shape}")
        stats += [features.mean(0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])]
    return gaussian_frechet_distance(*stats)


class I3DFeatures:
    """Clip features for FVD from an I3D TorchScript file.

    The file must follow the convention of the TorchScript I3D (Kinetics-400) that StyleGAN-V and most
    FVD code use, ``i3d_torchscript.pt``: ``detector(videos, rescale=True, resize=True,
    return_features=True)`` with ``videos`` float ``(B, 3, T, H, W)`` in ``[0, 255]``, returning ``(B, D)``
    features (the detector rescales to ``[-1, 1]`` and resizes to 224 x 224 itself). Weights cannot be
    downloaded here: pass a file you already have.

    Parameters
    ----------
    path : str
        The TorchScript file.
    device : th.device or str
        Where the detector runs.
    """

    def __init__(self, path: str, device: th.device | str = "cpu") -> None:
        self.device = th.device(device)
        self.detector = th.jit.load(path, map_location=self.device).eval()

    @th.no_grad()
    def __call__(self, videos: th.Tensor) -> th.Tensor:
        """Features ``(B, D)`` of clips ``(B, T, C, H, W)`` with values in [0, 1]."""
        clips = rgb(videos).permute(0, 2, 1, 3, 4).float().mul(255.0).to(self.device)
        return self.detector(clips, rescale=True, resize=True, return_features=True).float().cpu()


# ------------------------------------------------------------------------------------------ episodes


@dataclasses.dataclass
class Episode:
    """One recorded episode of ``T`` steps, observations and actions as the environment takes them.

    Attributes
    ----------
    observations : np.ndarray
        ``(T + 1, *obs_shape)``: every observation including the final one.
    actions : np.ndarray
        ``(T, *action_shape)``: the action taken at ``observations[t]``.
    rewards : np.ndarray
        ``(T,)`` float: the reward that followed ``actions[t]``.
    terminated : np.ndarray
        ``(T,)`` bool: ``actions[t]`` ended the episode by termination (not by a time limit).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray

    def __len__(self) -> int:
        return len(self.rewards)


def collect_episode(env: gym.Env, policy: BaseAlgorithm | None = None, seed: int | None = None) -> Episode:
    """Play one episode with a fixed policy.

    Parameters
    ----------
    env : gymnasium.Env
        A single (not vectorised) environment.
    policy : BaseAlgorithm, optional
        Acts through ``predict(obs, state, episode_start)`` (a GITSTORM model carries its context in
        the state); None samples uniformly random actions.
    seed : int, optional
        Seed of the reset (and of the random actions).

    Returns
    -------
    Episode
    """
    obs, _ = env.reset(seed=seed)
    if seed is not None:
        env.action_space.seed(seed)
    observations: list[Any] = [obs]
    actions: list[Any] = []
    rewards: list[float] = []
    terminations: list[bool] = []
    state, done = None, False
    while not done:
        if policy is None:
            action = env.action_space.sample()
        else:
            action, state = policy.predict(obs, state=state, episode_start=np.array([not actions]))
        obs, reward, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
        observations.append(obs)
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(terminated)
    return Episode(np.stack(observations), np.stack(actions), np.asarray(rewards, np.float32), np.asarray(terminations, bool))


class Windows(NamedTuple):
    """A batch of ``N`` windows of ``context + horizon`` consecutive frames of recorded episodes.

    Attributes
    ----------
    observations : np.ndarray
        ``(N, context + horizon, *obs_shape)`` environment observations.
    actions : np.ndarray
        ``(N, context + horizon - 1, *action_shape)`` environment actions between them.
    rewards, terminated : np.ndarray
        ``(N, horizon)``: reward and termination after each imagined step's action (the actions
        ``context - 1 ..``).
    episode_starts : np.ndarray
        ``(N,)`` bool: the window begins with its episode's first observation.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    episode_starts: np.ndarray


def window_starts(episodes: list[Episode], context: int, horizon: int, stride: int) -> list[tuple[int, int]]:
    """``(episode, first step)`` of every window, ``stride`` steps apart counted back from each episode's end.

    Counting from the end puts every episode's last step (and its termination) in a window; episodes
    shorter than ``context + horizon - 1`` steps give none.
    """
    length = context + horizon - 1  # steps (actions) in a window
    return [(i, start) for i, episode in enumerate(episodes) for start in range(len(episode) - length, -1, -stride)]


def gather_windows(episodes: list[Episode], starts: list[tuple[int, int]], context: int, horizon: int) -> Windows:
    """Stack the windows that begin at ``starts`` (from :func:`window_starts`)."""
    length = context + horizon - 1
    picked = [(episodes[i], s) for i, s in starts]
    return Windows(
        observations=np.stack([e.observations[s : s + length + 1] for e, s in picked]),
        actions=np.stack([e.actions[s : s + length] for e, s in picked]),
        rewards=np.stack([e.rewards[s + context - 1 : s + length] for e, s in picked]),
        terminated=np.stack([e.terminated[s + context - 1 : s + length] for e, s in picked]),
        episode_starts=np.array([s == 0 for _, s in picked]),
    )


# ---------------------------------------------------------------------------------- open-loop metrics


def check_compatible(model: GITSTORM, observation_space: spaces.Box, action_space: spaces.Space) -> None:
    """Raise a ValueError unless ``model`` takes the observations and actions of this environment."""
    sample = np.zeros(observation_space.shape, observation_space.dtype)
    if maybe_transpose(sample, model.observation_space).shape != model.observation_space.shape:
        raise ValueError(f"the model takes observations {model.observation_space}, the environment gives {observation_space}")
    if action_space != model.action_space:
        raise ValueError(f"the model takes actions {model.action_space}, the environment's are {action_space}")


class OpenLoopPrediction(NamedTuple):
    """Open-loop predictions for a batch of ``N`` windows, ``S`` samples each, ``H`` imagined steps.

    Frames are in the world model's input format: images ``(C, side, side)`` in [0, 1] (the real frames
    resized to the model's input), vectors flattened in observation units.

    Attributes
    ----------
    real : th.Tensor
        ``(N, H, *frame)``: the real frames ``o_{t+1} .. o_{t+H}``.
    predicted : th.Tensor
        ``(N, S, H, *frame)``: decoded imagined frames.
    reconstructed : th.Tensor
        ``(N, H, *frame)``: the real frames through encoder (posterior mode) and decoder, for reference.
    rewards, continues : th.Tensor
        ``(N, S, H)``: predicted reward and continuation probability after each real action.
    prior_kl : th.Tensor or None
        ``(N, S, H)``: ``KL(posterior || sampler)`` of each imagined latent, over all tokens (module docstring;
        None where the prior's ``kl_kind`` is ``"not_available"``).
    prior_entropy : th.Tensor or None
        ``(N, S, H)``: entropy per token of the distribution each imagined latent was sampled from (idem).
    posterior_log_probs : th.Tensor
        ``(N, H, K, C)``: posterior of each real frame.
    """

    real: th.Tensor
    predicted: th.Tensor
    reconstructed: th.Tensor
    rewards: th.Tensor
    continues: th.Tensor
    prior_kl: th.Tensor | None
    prior_entropy: th.Tensor | None
    posterior_log_probs: th.Tensor


class OpenLoopEvaluator:
    """Open-loop prediction metrics of one model, accumulated over batches of windows.

    Parameters
    ----------
    model : GITSTORM
        The model; imagination uses its draft-and-revise settings.
    context, horizon : int
        Real frames the model sees, then imagined steps (with the real actions).
    samples : int
        Imagined rollouts per window (the metrics average over them).
    video_features : I3DFeatures, optional
        Clip features for FVD (image models only); None skips FVD.
    prior_orders : int
        Random decoding orders of the prior KL and perplexity bounds (``prior_kl_kind`` ``"upper_bound"``);
        they draw from their own random stream, so the imagined rollouts do not depend on them.
    """

    def __init__(
        self,
        model: GITSTORM,
        context: int,
        horizon: int,
        samples: int = 1,
        video_features: I3DFeatures | None = None,
        prior_orders: int = 32,
    ) -> None:
        if min(context, horizon, samples, prior_orders) < 1:
            raise ValueError(
                f"context, horizon, samples and prior_orders must be >= 1, got {context}, {horizon}, {samples}, {prior_orders}"
            )
        model.policy.config.check_sequence_length("context - 1 + horizon", context - 1 + horizon)
        if context - 1 + horizon > model.batch_length:
            warnings.warn(
                f"context - 1 + horizon ({context - 1 + horizon}) is longer than the model's training windows "
                f"(batch_length {model.batch_length}): the sequence model never learned the positions past them",
                stacklevel=2,
            )
        self.model, self.context, self.horizon, self.samples, self.prior_orders = model, context, horizon, samples, prior_orders
        self.prior_generator = th.Generator(model.device).manual_seed(0)
        self.world_model = model.policy.world_model.eval()
        self.images = self.world_model.is_image
        self.video_features = video_features if self.images else None
        self.sums: dict[str, th.Tensor] = defaultdict(lambda: th.zeros(horizon, dtype=th.float64))
        self.counts: dict[str, th.Tensor] = defaultdict(lambda: th.zeros(horizon, dtype=th.float64))
        self.windows = self.terminations = 0
        self.features: dict[str, list[th.Tensor]] = {"real": [], "predicted": []}

    def _observations(self, observations: np.ndarray) -> th.Tensor:
        """Environment observations ``(N, T, *obs_shape)`` to the world model's ``(N, T, *model_obs_shape)``."""
        n, t = observations.shape[:2]
        policy = self.model.policy
        obs, _ = policy.obs_to_tensor(observations.reshape(n * t, *observations.shape[2:]))
        obs = policy.model_observation(obs)  # type: ignore[arg-type]
        return obs.reshape(n, t, *obs.shape[1:])

    def _actions(self, actions: np.ndarray) -> th.Tensor:
        """Environment actions to the world model's: indices, or Box actions scaled to [-1, 1]."""
        if self.world_model.discrete:
            return th.as_tensor(actions, dtype=th.long, device=self.model.device).reshape(actions.shape[:2])
        scaled = self.model.policy.scale_action(actions.reshape(*actions.shape[:2], -1))
        return th.as_tensor(scaled, dtype=th.float32, device=self.model.device)

    def _frames(self, output: th.Tensor) -> th.Tensor:
        """Decoder output to frames: images clamped to [0, 1], vectors from symlog back to observation units."""
        return output.clamp(0.0, 1.0) if self.images else symexp(output)

    @th.no_grad()
    def predict(self, windows: Windows) -> OpenLoopPrediction:
        """Imagine ``horizon`` steps from the first ``context`` frames of every window, ``samples`` times."""
        wm, c, h, s = self.world_model, self.context, self.horizon, self.samples
        obs = self._observations(windows.observations)
        actions = self._actions(windows.actions)
        n = obs.shape[0]
        starts = th.zeros(n, c, dtype=th.bool, device=obs.device)
        starts[:, 0] = th.as_tensor(windows.episode_starts, device=obs.device)

        def repeat(x: th.Tensor) -> th.Tensor:  # each window ``samples`` times, samples of a window adjacent
            return x.repeat_interleave(s, 0)

        start = wm.observe(wm.sample_tokens(repeat(obs[:, :c])), repeat(actions[:, : c - 1]), repeat(starts), h)
        trajectory = wm.dream(start, h, repeat(actions[:, c - 1 :]))
        # State k + 1 holds the latent drawn from the prior at h_{t+k}, and h_{t+k} itself.
        latents, hidden = trajectory.latents[:, 1:], trajectory.hidden[:, 1:]
        posterior = wm.posterior(obs[:, c:])
        modes = wm.tokens_to_latent(posterior.argmax(-1))
        prior_kl = prior_entropy = None
        if wm.prior.kl_kind != "not_available":
            flat_hidden = hidden.flatten(0, 1)
            orders, generator = self.prior_orders, self.prior_generator
            prior_kl = wm.prior.sampler_kl(repeat(posterior).flatten(0, 1), flat_hidden, orders, generator)
            prior_entropy = wm.prior.sampler_entropy(flat_hidden, orders, generator) / wm.prior.num_tokens
        real = wm.preprocess(obs[:, c:].reshape(n * h, *obs.shape[2:]))
        frame = real.shape[1:]
        return OpenLoopPrediction(
            real=real.reshape(n, h, *frame),
            predicted=self._frames(wm.decode(latents)).reshape(n, s, h, *frame),
            reconstructed=self._frames(wm.decode(modes)).reshape(n, h, *frame),
            rewards=trajectory.rewards.reshape(n, s, h),
            continues=trajectory.continues.reshape(n, s, h),
            prior_kl=None if prior_kl is None else prior_kl.reshape(n, s, h),
            prior_entropy=None if prior_entropy is None else prior_entropy.reshape(n, s, h),
            posterior_log_probs=posterior,
        )

    def _add(self, name: str, values: th.Tensor, where: th.Tensor | None = None) -> None:
        """Accumulate ``values`` ``(..., H)`` per horizon step, only where the bool ``where`` (same shape) holds."""
        values = values.double().cpu().reshape(-1, self.horizon)
        weights = th.ones_like(values) if where is None else where.double().cpu().reshape(-1, self.horizon)
        self.sums[name] += (values * weights).sum(0)
        self.counts[name] += weights.sum(0)

    def add_episodes(self, episodes: list[Episode], stride: int, batch_size: int = 64) -> None:
        """:meth:`add` every window of ``episodes`` (:func:`window_starts` with ``stride``), ``batch_size`` at a time."""
        starts = window_starts(episodes, self.context, self.horizon, stride)
        for i in range(0, len(starts), batch_size):
            self.add(gather_windows(episodes, starts[i : i + batch_size], self.context, self.horizon))

    def add(self, windows: Windows) -> OpenLoopPrediction:
        """Predict a batch of windows and accumulate its metrics; returns the prediction (e.g. to draw it)."""
        p = self.predict(windows)
        n, s, h = p.rewards.shape
        self.windows += n
        self.terminations += int(windows.terminated.sum())
        real = p.real[:, None].expand_as(p.predicted)
        self._add("mse", (p.predicted - real).square().flatten(3).mean(-1))
        self._add("reconstruction_mse", (p.reconstructed - p.real).square().flatten(2).mean(-1))
        if self.images:
            frames = p.predicted.reshape(n * s * h, *p.predicted.shape[3:])
            targets = real.reshape(frames.shape)
            self._add("psnr", psnr(frames, targets))
            self._add("ssim", ssim(frames, targets))
            reconstructed, real_frames = (x.reshape(n * h, *x.shape[2:]) for x in (p.reconstructed, p.real))
            self._add("reconstruction_psnr", psnr(reconstructed, real_frames))
            self._add("reconstruction_ssim", ssim(reconstructed, real_frames))
        rewards = th.as_tensor(windows.rewards, dtype=th.float64)[:, None].expand(n, s, h)
        terminated = th.as_tensor(windows.terminated)[:, None].expand(n, s, h)
        predicted_terminated = p.continues.cpu() < 0.5
        reward_errors = p.rewards.cpu().double() - rewards
        self._add("reward_abs_error", reward_errors.abs())
        # Explained variance needs the squared errors and the spread of the real rewards (see summary).
        self._add("reward_squared_error", reward_errors.square())
        self._add(REWARD_MOMENTS[0], rewards)
        self._add(REWARD_MOMENTS[1], rewards.square())
        self._add("termination_accuracy", predicted_terminated == terminated)
        self._add("termination_recall", predicted_terminated, where=terminated)
        if p.prior_kl is not None and p.prior_entropy is not None:
            self._add("prior_kl", p.prior_kl)
            self._add("prior_entropy", p.prior_entropy)
        self._add("posterior_entropy", entropy(p.posterior_log_probs).mean(-1))
        if self.video_features is not None:
            self.features["real"].append(self.video_features(p.real))
            self.features["predicted"].append(self.video_features(p.predicted.flatten(0, 1)))
        return p

    def summary(self) -> dict[str, Any]:
        """The metrics so far: the mean of each over all steps and a ``<name>_per_step`` list of ``H``
        values (None where undefined, e.g. termination recall without terminations).

        Perplexities are ``exp`` of the mean entropies; the image metrics (:data:`IMAGE_METRICS`) of a
        vector model and ``fvd`` without video features are None. ``prior_kl_kind`` says whether
        ``prior_kl`` and ``prior_perplexity`` are ``"exact"``, ``"upper_bound"`` or ``"not_available"``
        (then both are None; module docstring).
        """
        kind = self.world_model.prior.kl_kind
        result: dict[str, Any] = {"windows": self.windows, "terminations": self.terminations, "prior_kl_kind": kind}
        result |= self._reward_explained_variance()
        for name, sums in self.sums.items():
            if name in REWARD_MOMENTS:
                continue
            counts = self.counts[name]
            per_step = sums / counts.clamp(min=1)
            mean = sums.sum() / counts.sum()
            if name.endswith("_entropy"):
                name, per_step, mean = name.replace("_entropy", "_perplexity"), per_step.exp(), mean.exp()
            result[name] = float(mean) if counts.sum() > 0 else None
            result[f"{name}_per_step"] = [float(v) if c > 0 else None for v, c in zip(per_step, counts, strict=True)]
        for name in (*IMAGE_METRICS, *PRIOR_METRICS):
            result.setdefault(name, None)
            result.setdefault(f"{name}_per_step", None)
        result["fvd"] = None
        if self.video_features is not None and self.windows >= 2:
            real, predicted = (th.cat(self.features[k]).numpy() for k in ("real", "predicted"))
            result["fvd"] = frechet_distance(real, predicted)
        return result

    def _reward_explained_variance(self) -> dict[str, Any]:
        """``1 - MSE / Var(real reward)``: 1 for exact rewards, 0 for a model no better than predicting the
        mean reward, negative for worse (the reward MAE alone cannot tell these apart). None without spread."""
        if not self.sums:
            return {"reward_explained_variance": None, "reward_explained_variance_per_step": None}
        counts = self.counts["reward_squared_error"]
        first, second, squared_error = (self.sums[k] for k in (*REWARD_MOMENTS, "reward_squared_error"))

        def explained(error: th.Tensor, total: th.Tensor, square: th.Tensor, count: th.Tensor) -> float | None:
            variance = square / count - (total / count) ** 2
            return float(1.0 - error / count / variance) if count > 0 and variance > 1e-12 else None

        per_step = [explained(*step) for step in zip(squared_error, first, second, counts, strict=True)]
        overall = explained(squared_error.sum(), first.sum(), second.sum(), counts.sum())
        return {"reward_explained_variance": overall, "reward_explained_variance_per_step": per_step}


# ---------------------------------------------------------------------------------------- feasibility

#: ``checker(previous, action, frame)``: can ``frame`` follow ``previous`` after ``action``? Frames are channel-first
#: floats in [0, 1] as the world model decodes them, the action as the environment takes it
#: (e.g. :meth:`sb3_gitstorm.envs.toy.JumpingDotEnv.feasible`).
FeasibilityChecker = Callable[[np.ndarray, Any, np.ndarray], bool]


class FeasibilityEvaluator(OpenLoopEvaluator):
    """:class:`OpenLoopEvaluator` that also counts imagined frames that cannot happen, for tasks with a checker.

    Adds to :meth:`~OpenLoopEvaluator.summary`:

    - ``feasible``: share of imagined frames that can follow the frame before them in their rollout (the
      last real context frame for the first step) after the real action;
    - ``feasible_rollout``: share of rollouts whose frames were all feasible up to that step;
    - ``reconstruction_feasible``: the same as ``feasible`` for the reconstructions (posterior mode) of
      the real frames, each after the real frame before it: the ceiling the decoder allows.

    Each with a ``_per_step`` list, like the other metrics.

    Parameters
    ----------
    model : GITSTORM
        An image model.
    context, horizon, samples, video_features, prior_orders
        As in :class:`OpenLoopEvaluator`.
    checker : callable
        ``checker(previous, action, frame) -> bool`` (:data:`FeasibilityChecker`).
    """

    def __init__(
        self,
        model: GITSTORM,
        context: int,
        horizon: int,
        checker: FeasibilityChecker,
        samples: int = 1,
        video_features: I3DFeatures | None = None,
        prior_orders: int = 32,
    ) -> None:
        super().__init__(model, context, horizon, samples, video_features, prior_orders)
        if not self.images:
            raise ValueError("the feasibility checker judges decoded frames: the model must see images")
        self.checker = checker

    def _check(self, previous: np.ndarray, actions: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """``checker`` of each row: frames ``(N, *frame)``, actions ``(N, ...)``; bool ``(N,)``."""
        return np.array([self.checker(p, a, f) for p, a, f in zip(previous, actions, frames, strict=True)], dtype=bool)

    def add(self, windows: Windows) -> OpenLoopPrediction:
        p = super().add(windows)
        n, s, h = p.rewards.shape
        c = self.context
        last = self.world_model.preprocess(self._observations(windows.observations[:, c - 1 : c])[:, 0]).cpu().numpy()
        actions = windows.actions[:, c - 1 :]  # the real action before each imagined step, (N, H, ...)
        real, reconstructed, predicted = (x.cpu().numpy() for x in (p.real, p.reconstructed, p.predicted))
        before_real = np.concatenate([last[:, None], real[:, :-1]], 1)  # (N, H, *frame)
        feasible = np.zeros((n, s, h), dtype=bool)
        reconstruction = np.zeros((n, h), dtype=bool)
        for k in range(h):
            reconstruction[:, k] = self._check(before_real[:, k], actions[:, k], reconstructed[:, k])
            previous = np.repeat(last, s, 0) if k == 0 else predicted[:, :, k - 1].reshape(n * s, *last.shape[1:])
            feasible[:, :, k] = self._check(
                previous, np.repeat(actions[:, k], s, 0), predicted[:, :, k].reshape(previous.shape)
            ).reshape(n, s)
        self._add("feasible", th.as_tensor(feasible))
        self._add("feasible_rollout", th.as_tensor(np.logical_and.accumulate(feasible, -1)))
        self._add("reconstruction_feasible", th.as_tensor(reconstruction))
        return p


# ------------------------------------------------------------------------------------------- pictures


def tile(images: np.ndarray, gap: int = 2) -> np.ndarray:
    """Lay out ``(rows, columns, h, w, 3)`` uint8 images on a white grid with ``gap`` pixels between them."""
    rows, columns, height, width = images.shape[:4]
    grid = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, np.uint8)
    for r in range(rows):
        for c in range(columns):
            grid[r * (height + gap) : r * (height + gap) + height, c * (width + gap) : c * (width + gap) + width] = images[r, c]
    return grid


def rollout_pictures(prediction: OpenLoopPrediction, windows: int = 2) -> tuple[np.ndarray, list[np.ndarray]]:
    """A strip and the frames of an animation comparing real and imagined frames (image models).

    Parameters
    ----------
    prediction : OpenLoopPrediction
        Predictions of image frames.
    windows : int
        How many of its windows to show (the first ones).

    Returns
    -------
    tuple
        The strip, uint8 ``(height, width, 3)``: for each window a block with the real row above one
        row per imagined sample, one column per horizon step; and the ``H`` frames of the animation:
        the real frame above the imagined ones, one column per window.
    """
    rows = th.cat([prediction.real[:windows, None], prediction.predicted[:windows]], 1)  # (W, 1 + S, H, C, h, w)
    images = rgb(rows).mul(255).round().to(th.uint8).permute(0, 1, 2, 4, 5, 3).cpu().numpy()
    window_gap = 8  # wider than the gap between frames, so the blocks of different windows stand apart
    strip = tile(np.stack([tile(block) for block in images])[:, None], window_gap)
    frames = [tile(np.stack([tile(block[:, t, None]) for block in images])[None], window_gap) for t in range(images.shape[2])]
    return strip, frames
