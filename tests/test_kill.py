"""SIGKILL in the middle of writing a checkpoint: the previous checkpoint loads and resumes, only the steps since it are lost."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.buffers import SequenceReplayBuffer
from sb3_gitstorm.save_util import latest_checkpoint
from tests.killable_training import CHECKPOINT_EVERY, KWARGS, STALL_AFTER_BYTES
from tests.test_resume import assert_same_state

ROOT = Path(__file__).resolve().parent.parent


def kill_while_writing(folder: Path, file_number: int) -> None:
    """Run ``tests.killable_training`` until it stalls in its ``file_number``-th checkpoint file, then SIGKILL it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.killable_training", str(folder), str(file_number)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line == "stalled\n", line + process.stderr.read()  # type: ignore[union-attr]
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("file_number, written", [(3, []), (4, ["rl_model_72_steps.zip"])], ids=["model", "replay_buffer"])
def test_sigkill_while_writing_a_checkpoint(tmp_path, file_number: int, written: list[str]) -> None:
    kill_while_writing(tmp_path, file_number)
    first = ["rl_model_36_steps.zip", "rl_model_replay_buffer_36_steps.pkl"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".tmp")) == sorted(first + written)
    (partial,) = tmp_path.glob(".*.tmp")  # the half-written file, under a temporary name
    assert partial.stat().st_size == STALL_AFTER_BYTES

    # A model of step 72 without its replay buffer does not count: resuming from it would restart the replay.
    model_path, replay_path = latest_checkpoint(tmp_path)  # type: ignore[misc]
    assert [model_path.name, replay_path.name] == first  # type: ignore[union-attr]
    resumed = GITSTORM.load(model_path, env=gym.make("CartPole-v1"))
    resumed.load_replay_buffer(replay_path)  # type: ignore[arg-type]

    # Nothing but the steps since the checkpoint is lost: it is the same run (seeded) as far as its checkpoint.
    reference = GITSTORM("MlpPolicy", "CartPole-v1", seed=0, **KWARGS)
    reference.learn(CHECKPOINT_EVERY - 1)
    assert resumed.num_timesteps == resumed.replay_buffer.pos == CHECKPOINT_EVERY - 1
    for name in SequenceReplayBuffer.ARRAYS[:-2]:  # the seam's truncation and episode-start flags differ by design
        np.testing.assert_array_equal(getattr(resumed.replay_buffer, name), getattr(reference.replay_buffer, name), err_msg=name)
    assert_same_state(resumed.policy.state_dict(), reference.policy.state_dict())
    resumed.learn(8, reset_num_timesteps=False)
    assert resumed.num_timesteps == CHECKPOINT_EVERY + 7 and all(th.isfinite(p).all() for p in resumed.policy.parameters())
