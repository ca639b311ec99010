"""rl_zoo3 integration: GITSTORM in ALGOS, default hyperparameter files, the shipped files, the zoo's scripts."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from unittest import mock

import gymnasium as gym
import optuna
import pytest
import rl_zoo3
import yaml
from requests.exceptions import HTTPError
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER
from rl_zoo3.utils import get_wrapper_class
from stable_baselines3 import DQN, PPO, SAC

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.envs import ATARI_100K_GAMES, DMC_TASKS, atari_id, dmc_id
from sb3_gitstorm.zoo import (
    HYPERPARAMS_DIR,
    GitstormExperimentManager,
    default_conf_file,
    push_to_hub,
    record_training,
    run_zoo_script,
)
from sb3_gitstorm.zoo.train import with_default_conf_file, with_latest_checkpoint

# run_zoo_script in this process re-runs rl_zoo3.load_from_hub, which rl_zoo3.enjoy imported (a fresh `python -m` does not).
pytestmark = pytest.mark.filterwarnings("ignore:'rl_zoo3.load_from_hub' found in sys.modules:RuntimeWarning")
SCRIPTS = ("train", "enjoy", "record_video", "record_training", "push_to_hub", "load_from_hub")
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
    is_atari = GitstormExperimentManager.is_atari
    assert is_atari(atari_id("Pong")) and is_atari("ALE/Pong-v5")
    assert not is_atari(dmc_id("cartpole-balance")) and not is_atari("CartPole-v1")
    assert not ExperimentManager.is_atari(atari_id("Pong"))  # rl_zoo3's own class is left as it was


def test_import_leaves_experiment_manager_as_it_was() -> None:
    """Importing the package, its zoo module, the scripts or the benchmark harness changes no attribute of rl_zoo3's class."""
    modules = ["sb3_gitstorm", "sb3_gitstorm.zoo", *(f"sb3_gitstorm.zoo.{script}" for script in SCRIPTS)]
    modules += ["sb3_gitstorm.comparison.compare", "sb3_gitstorm.comparison.runner", "sb3_gitstorm.comparison.sweep"]
    code = f"""
import importlib
import rl_zoo3.exp_manager
manager = rl_zoo3.exp_manager.ExperimentManager
before = dict(vars(manager))
for name in {modules!r}:
    importlib.import_module(name)
assert rl_zoo3.exp_manager.ExperimentManager is manager
changed = sorted(key for key in {{*before, *vars(manager)}} if before.get(key) is not vars(manager).get(key))
assert not changed, changed
assert rl_zoo3.ALGOS["gitstorm"].__name__ == "GITSTORM"
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


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
    pixel_toys = {"gitstorm/WhichHalf-v0", "gitstorm/JumpingDot-v0"}  # cpu-pixels.yml's discrete row, prior-returns.yml
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


FAST = "learning_starts:32 batch_size:4 batch_length:8 imagine_batch_size:16 imagine_context_length:4 imagine_horizon:4"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zoo log folder with one tiny GITSTORM CartPole run (``logs/gitstorm/CartPole-v1_1``), trained in this process."""
    folder = tmp_path_factory.mktemp("logs")
    conf = str(HYPERPARAMS_DIR / "gitstorm.yml")
    args = ["--algo", "gitstorm", "--env", "CartPole-v1", "-f", str(folder), "-n", "64", "--seed", "0", "--num-threads", "1"]
    run_zoo_script("train", [*args, "--conf-file", conf, "-params", *FAST.split()])
    return folder


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help(script: str, capsys: pytest.CaptureFixture[str]) -> None:
    main = {"push_to_hub": push_to_hub.main, "record_training": record_training.main}.get(script)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"]) if main else run_zoo_script(script, ["--help"])
    assert exit_info.value.code == 0
    assert "gitstorm" in capsys.readouterr().out  # in --algo's choices


def test_record_video(trained_run: Path, tmp_path: Path) -> None:
    """``python -m sb3_gitstorm.zoo.record_video`` writes an mp4 of the trained agent."""
    pytest.importorskip("moviepy")
    pytest.importorskip("pygame")  # CartPole's rendering
    common = ["--algo", "gitstorm", "--env", "CartPole-v1", "-f", str(trained_run)]
    zoo("record_video", *common, "-n", "16", "-o", str(tmp_path))
    videos = list(tmp_path.glob("*.mp4"))
    assert len(videos) == 1 and videos[0].name.startswith("final-model-gitstorm-CartPole-v1") and videos[0].stat().st_size > 0


def test_record_training_runs_our_record_video() -> None:
    with mock.patch.object(record_training, "_call", return_value=0) as call:
        record_training.call_our_record_video(["python", "-m", "rl_zoo3.record_video", "--algo", "gitstorm"])
        record_training.call_our_record_video(["ffmpeg", "-i", "x"])
    assert call.call_args_list[0].args[0] == [sys.executable, "-m", "sb3_gitstorm.zoo.record_video", "--algo", "gitstorm"]
    assert call.call_args_list[1].args[0] == ["ffmpeg", "-i", "x"]


def test_push_to_hub_then_load_from_hub(trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub round trip without the network: the folder push_to_hub uploads, then load_from_hub reading it back."""
    monkeypatch.chdir(tmp_path)  # push_to_hub builds the repository in ./hub/<repo name>
    uploaded: list[Path] = []
    api = mock.MagicMock()
    api.create_repo.return_value = "https://huggingface.co/someone/gitstorm-CartPole-v1"
    api.snapshot_download.side_effect = lambda repo_id, local_dir: Path(local_dir).mkdir(parents=True)  # a new, empty repository
    api.upload_folder.side_effect = lambda repo_id, folder_path, commit_message: uploaded.append(Path(folder_path))
    common = ["--algo", "gitstorm", "--env", "CartPole-v1"]
    with mock.patch("huggingface_hub.HfApi", return_value=api):
        push_to_hub.main([*common, "-f", str(trained_run), "-orga", "someone", "--no-render", "--num-threads", "1"])
    (repo,) = uploaded
    assert api.upload_folder.call_args.kwargs["repo_id"] == "someone/gitstorm-CartPole-v1"
    files = {path.name for path in repo.iterdir()}
    assert {"gitstorm-CartPole-v1.zip", "config.yml", "args.yml", "env_kwargs.yml", "train_eval_metrics.zip"} <= files
    card = (repo / "README.md").read_text()  # the model card
    assert "library_name: stable-baselines3" in card and "# **GITSTORM** Agent playing **CartPole-v1**" in card
    assert GITSTORM.load(repo / "gitstorm-CartPole-v1.zip").num_timesteps == 64

    def from_local_hub(repo_id: str, filename: str) -> str:
        assert repo_id == "someone/gitstorm-CartPole-v1"
        if not (repo / filename).is_file():
            raise HTTPError(filename)
        return str(repo / filename)

    with mock.patch("huggingface_sb3.load_from_hub", from_local_hub):
        run_zoo_script("load_from_hub", [*common, "-f", "downloaded", "-orga", "someone"])
    run = tmp_path / "downloaded" / "gitstorm" / "CartPole-v1_1"  # the layout enjoy reads (test_train_then_enjoy_cli)
    assert {"CartPole-v1.zip", "0.monitor.csv"} <= {path.name for path in run.iterdir()}
    assert {"config.yml", "args.yml", "env_kwargs.yml"} <= {path.name for path in (run / "CartPole-v1").iterdir()}
    assert GITSTORM.load(run / "CartPole-v1.zip").num_timesteps == 64
