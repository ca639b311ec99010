"""rl_zoo3 integration: GITSTORM in ALGOS, default hyperparameter files, the shipped files, train / enjoy CLI."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import optuna
import pytest
import rl_zoo3
import yaml
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER
from rl_zoo3.utils import get_wrapper_class
from stable_baselines3 import DQN, PPO, SAC

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.envs import ATARI_100K_GAMES, DMC_TASKS, atari_id, dmc_id
from sb3_gitstorm.zoo import HYPERPARAMS_DIR, default_conf_file
from sb3_gitstorm.zoo.train import with_default_conf_file, with_latest_checkpoint

ALGOS = {"gitstorm": GITSTORM, "ppo": PPO, "sac": SAC, "dqn": DQN}
# Keys rl_zoo3 consumes itself instead of passing them to the algorithm.
ZOO_KEYS = {"n_timesteps", "n_envs", "env_wrapper", "frame_stack", "normalize"}
ROOT = Path(__file__).resolve().parent.parent


def load(algo: str) -> dict:
    return yaml.safe_load((HYPERPARAMS_DIR / f"{algo}.yml").read_text())


def test_gitstorm_is_a_zoo_algorithm() -> None:
    assert rl_zoo3.ALGOS["gitstorm"] is GITSTORM
    assert rl_zoo3.ALGOS["ppo"] is PPO
    # Our Atari ids get the zoo's Atari treatment (stochastic evaluation, game scores in enjoy).
    assert ExperimentManager.is_atari(atari_id("Pong")) and ExperimentManager.is_atari("ALE/Pong-v5")
    assert not ExperimentManager.is_atari(dmc_id("cartpole-balance")) and not ExperimentManager.is_atari("CartPole-v1")


def test_default_conf_file() -> None:
    ours = str(HYPERPARAMS_DIR / "gitstorm.yml")
    assert default_conf_file("gitstorm", "CartPole-v1") == ours
    assert default_conf_file("gitstorm", "Acrobot-v1") == ours  # rl_zoo3 has no gitstorm file to fall back on
    assert default_conf_file("ppo", atari_id("Pong")) == str(HYPERPARAMS_DIR / "ppo.yml")
    assert default_conf_file("ppo", "LunarLander-v3") is None  # the zoo's tuned settings
    assert default_conf_file("a2c", "CartPole-v1") is None
    assert with_default_conf_file(["--algo", "gitstorm"])[-2:] == ["--conf-file", ours]
    assert with_default_conf_file(["--algo", "gitstorm", "-conf", "my.yml"]) == ["--algo", "gitstorm", "-conf", "my.yml"]
    assert with_default_conf_file(["--algo", "a2c"]) == ["--algo", "a2c"]


def test_hyperparameter_files_cover_the_paper_environments() -> None:
    files = {algo: load(algo) for algo in ALGOS}
    atari = {atari_id(game) for game in ATARI_100K_GAMES}
    continuous = {dmc_id(task, pixels) for task in DMC_TASKS for pixels in (True, False)} | {"Pendulum-v1"}
    pixel_toys = {"gitstorm/WhichHalf-v0"}  # the discrete pixel row of benchmarks/configs/cpu-pixels.yml
    assert set(files["gitstorm"]) == atari | continuous | {"CartPole-v1"} | pixel_toys
    assert set(files["ppo"]) == set(files["gitstorm"])
    assert set(files["sac"]) == continuous
    assert set(files["dqn"]) == pixel_toys
    assert all(files["gitstorm"][env_id]["n_timesteps"] == 100_000 for env_id in atari)
    for algo, hyperparams in files.items():
        arguments = set(inspect.signature(ALGOS[algo]).parameters)
        for env_id, entry in hyperparams.items():
            assert env_id in gym.registry
            assert entry["n_timesteps"] == files["gitstorm"][env_id]["n_timesteps"], (algo, env_id)
            assert set(entry) - ZOO_KEYS <= arguments, (algo, env_id)
            get_wrapper_class(entry)  # wrappers import
            eval(entry.get("policy_kwargs", "None"))


def test_optuna_search_space_builds_a_model() -> None:
    learning_rates = dict(learning_rate=1e-4, actor_learning_rate=3e-5, critic_learning_rate=3e-5)
    trial = optuna.trial.FixedTrial(dict(**learning_rates, gamma=0.985, ent_coef=3e-4, imagine_horizon=8))
    params = HYPERPARAMS_SAMPLER["gitstorm"](trial, 0, 1, {})
    model = GITSTORM("MlpPolicy", "CartPole-v1", policy_kwargs=dict(size="tiny"), **params)
    assert model.imagine_horizon == 8


def zoo(script: str, *args: str) -> str:
    """Run ``python -m sb3_gitstorm.zoo.<script> <args>`` and return its output."""
    result = subprocess.run([sys.executable, "-m", f"sb3_gitstorm.zoo.{script}", *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def test_train_then_enjoy_cli(tmp_path: Path) -> None:
    """The zoo's CLI end to end: train (with the default gitstorm.yml, an evaluation and a save), then enjoy."""
    common = ["--algo", "gitstorm", "--env", "CartPole-v1", "-f", str(tmp_path), "--num-threads", "1"]
    fast = "learning_starts:64 batch_size:4 batch_length:16 imagine_batch_size:16 imagine_context_length:4 imagine_horizon:4"
    train = [*common, "-n", "200", "--seed", "0", "--eval-freq", "150", "--eval-episodes", "1", "-params", *fast.split()]
    zoo("train", *train)
    run = tmp_path / "gitstorm" / "CartPole-v1_1"
    assert {"CartPole-v1.zip", "best_model.zip", "evaluations.npz", "0.monitor.csv"} <= {p.name for p in run.iterdir()}
    assert yaml.unsafe_load((run / "CartPole-v1" / "args.yml").read_text())["conf_file"] == str(HYPERPARAMS_DIR / "gitstorm.yml")

    assert f"Loading {run / 'CartPole-v1.zip'}" in zoo("enjoy", *common, "-n", "100", "--no-render")


def test_resume_from_the_latest_checkpoint_cli(tmp_path: Path) -> None:
    """``--save-freq`` + ``--save-replay-buffer`` checkpoints, then ``-i <run folder>`` continues the run from the newest one."""
    fast = "learning_starts:32 batch_size:4 batch_length:8 imagine_batch_size:16 imagine_context_length:4 imagine_horizon:4"
    common = ["--algo", "gitstorm", "--env", "CartPole-v1", "-f", str(tmp_path), "--num-threads", "1", "--seed", "0"]
    common += ["--save-freq", "48", "--save-replay-buffer", "-params", *fast.split()]
    zoo("train", *common, "-n", "96")
    first = tmp_path / "gitstorm" / "CartPole-v1_1"
    names = {p.name for p in first.iterdir()}
    assert {"rl_model_48_steps.zip", "rl_model_replay_buffer_48_steps.pkl", "rl_model_96_steps.zip"} <= names
    (first / "rl_model_replay_buffer_96_steps.pkl").unlink()  # as if killed while writing it: 48 is the newest complete one

    output = zoo("train", *common, "-n", "120", "-i", str(first))
    assert f"Loading the checkpoint's replay buffer {first / 'rl_model_replay_buffer_48_steps.pkl'}" in output
    resumed = tmp_path / "gitstorm" / "CartPole-v1_2"
    model = GITSTORM.load(resumed / "CartPole-v1.zip")
    assert model.num_timesteps == 120  # the run's budget, counted from the checkpoint's 47 steps
    model.load_replay_buffer(resumed / "replay_buffer.pkl")
    assert model.replay_buffer.pos == 120 and model.replay_buffer.episode_starts[47, 0]  # old steps kept, the seam marked


def test_with_latest_checkpoint(tmp_path: Path) -> None:
    names = ("rl_model_10_steps.zip", "rl_model_replay_buffer_10_steps.pkl", "rl_model_20_steps.zip", ".rl_model_30.tmp")
    for name in names:  # 20 lacks its replay buffer, 30 was never finished
        (tmp_path / name).touch()
    assert with_latest_checkpoint(["-i", str(tmp_path)])[-2:] == ["--trained-agent", str(tmp_path / "rl_model_10_steps.zip")]
    assert with_latest_checkpoint(["-i", "model.zip"]) == ["-i", "model.zip"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no complete checkpoint"):
        with_latest_checkpoint(["--trained-agent", str(tmp_path / "empty")])
