"""``python -m sb3_gitstorm.zoo.train --algo gitstorm --env CartPole-v1``: rl_zoo3's ``train`` with GITSTORM.

Takes every argument of ``python -m rl_zoo3.train``; see :mod:`sb3_gitstorm.zoo` for how the
hyperparameter file is chosen when ``--conf-file`` is not given.
"""

from __future__ import annotations

import argparse
import sys

from rl_zoo3.train import train

from sb3_gitstorm.zoo import default_conf_file


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


def main() -> None:
    sys.argv = [sys.argv[0], *with_default_conf_file(sys.argv[1:])]
    train()


if __name__ == "__main__":
    main()
