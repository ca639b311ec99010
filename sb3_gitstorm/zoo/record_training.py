"""``python -m sb3_gitstorm.zoo.record_training --algo gitstorm --env CartPole-v1 -f logs``: rl_zoo3's ``record_training``.

Takes every argument of ``python -m rl_zoo3.record_training``: records a video of every checkpoint of
a run (``--save-freq``) with :mod:`sb3_gitstorm.zoo.record_video` and joins them with ``ffmpeg``
(which must be on ``PATH``).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any
from unittest import mock

from sb3_gitstorm.zoo import run_zoo_script

_call = subprocess.call


def call_our_record_video(command: list[str], *args: Any, **kwargs: Any) -> int:
    """``subprocess.call`` that runs this package's ``record_video`` (with this interpreter) where rl_zoo3 runs its own."""
    if command[:3] == ["python", "-m", "rl_zoo3.record_video"]:
        command = [sys.executable, "-m", "sb3_gitstorm.zoo.record_video", *command[3:]]
    return _call(command, *args, **kwargs)


def main(argv: list[str]) -> None:
    """Run rl_zoo3's ``record_training`` with ``argv``."""
    with mock.patch.object(subprocess, "call", call_our_record_video):
        run_zoo_script("record_training", argv)


if __name__ == "__main__":
    main(sys.argv[1:])
