"""``python -m sb3_gitstorm.zoo.train --algo gitstorm --env CartPole-v1``: rl_zoo3's ``train`` with GITSTORM.

Takes every argument of ``python -m rl_zoo3.train``; see :mod:`sb3_gitstorm.zoo` for how the
hyperparameter file is chosen when ``--conf-file`` is not given. ``-i`` / ``--trained-agent`` also
takes a run folder: the newest complete checkpoint in it (``--save-freq``) is resumed, e.g.::

    python -m sb3_gitstorm.zoo.train --algo gitstorm --env CartPole-v1 --save-freq 1000 --save-replay-buffer
    python -m sb3_gitstorm.zoo.train --algo gitstorm --env CartPole-v1 --save-freq 1000 --save-replay-buffer \\
        -i logs/gitstorm/CartPole-v1_1
"""

from __future__ import annotations

import argparse
import os
import sys

from sb3_gitstorm.save_util import latest_checkpoint
from sb3_gitstorm.zoo import default_conf_file, run_zoo_script

__all__ = ["main", "with_default_conf_file", "with_latest_checkpoint"]


def with_default_conf_file(argv: list[str]) -> list[str]:
    """``argv`` plus ``--conf-file <file>`` when it has none and :func:`default_conf_file` picks one."""
    # Same option names (and defaults) as rl_zoo3's parser, which parses the full command line afterwards.
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("-conf", "--conf-file")
    args, _ = parser.parse_known_args(argv)
    conf_file = None if args.conf_file is not None else default_conf_file(args.algo, args.env)
    return argv if conf_file is None else [*argv, "--conf-file", conf_file]


def with_latest_checkpoint(argv: list[str]) -> list[str]:
    """``argv`` with ``-i <run folder>`` pointed at the newest complete checkpoint in that folder."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-i", "--trained-agent", default="")
    args, _ = parser.parse_known_args(argv)
    if not os.path.isdir(args.trained_agent):
        return argv
    checkpoint = latest_checkpoint(args.trained_agent)
    if checkpoint is None:
        raise SystemExit(f"-i {args.trained_agent}: no complete checkpoint (rl_model_<steps>_steps.zip) in this folder")
    return [*argv, "--trained-agent", str(checkpoint[0])]  # the last occurrence wins


def main() -> None:
    run_zoo_script("train", with_latest_checkpoint(with_default_conf_file(sys.argv[1:])))


if __name__ == "__main__":
    main()
