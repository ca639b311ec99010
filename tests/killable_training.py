"""A training run that stalls in the middle of writing a checkpoint file, for ``test_kill.py`` to SIGKILL.

``python -m tests.killable_training <folder> <n>`` trains a tiny GITSTORM on CartPole with
``CheckpointCallback(36, <folder>, save_replay_buffer=True)``: files 1 and 2 are the model and replay
buffer of step 36, 3 and 4 those of step 72. The ``n``-th file is written for real up to
``STALL_AFTER_BYTES`` bytes (flushed, so they are on disk; the replay file of step 72 is ~3 KB); then
the process prints ``stalled`` and waits to be killed.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import stable_baselines3.common.save_util as sb3_save_util
import torch as th
from stable_baselines3.common.callbacks import CheckpointCallback

from sb3_gitstorm import GITSTORM
from tests.conftest import FAST

STALL_AFTER_BYTES = 1024
CHECKPOINT_EVERY = 36
KWARGS = {**FAST, "buffer_size": 20_000}


class StallingFile:
    """Passes writes through to ``file`` until ``STALL_AFTER_BYTES`` are written, then stalls."""

    def __init__(self, file: Any) -> None:
        self.file, self.written = file, 0

    def write(self, data: Any) -> int:
        data = memoryview(data).cast("B")
        if self.written + data.nbytes > STALL_AFTER_BYTES:  # stall inside this write: a small pickle is one write
            self.file.write(data[: STALL_AFTER_BYTES - self.written])
            self.file.flush()
            print("stalled", flush=True)
            time.sleep(600)
        self.written += data.nbytes
        return self.file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def __enter__(self) -> StallingFile:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.file.close()


def main(folder: str, stall_at: int) -> None:
    th.set_num_threads(1)
    open_path, opened = sb3_save_util.open_path, 0

    def stalling_open_path(path: Any, mode: str, *args: Any, **kwargs: Any) -> Any:
        nonlocal opened
        file = open_path(path, mode, *args, **kwargs)
        if mode == "w" and isinstance(path, (str, os.PathLike)):  # not the inner call SB3 makes with the opened file
            opened += 1
            if opened == stall_at:
                return StallingFile(file)
        return file

    sb3_save_util.open_path = stalling_open_path  # SB3's save_to_zip_file and save_to_pkl open their files with it
    model = GITSTORM("MlpPolicy", "CartPole-v1", seed=0, **KWARGS)
    model.learn(10 * CHECKPOINT_EVERY, callback=CheckpointCallback(CHECKPOINT_EVERY, folder, save_replay_buffer=True))
    print("finished without stalling", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
