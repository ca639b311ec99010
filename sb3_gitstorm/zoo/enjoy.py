"""``python -m sb3_gitstorm.zoo.enjoy --algo gitstorm --env CartPole-v1 -f logs``: rl_zoo3's ``enjoy`` with GITSTORM.

Takes every argument of ``python -m rl_zoo3.enjoy``; the hyperparameters and env settings come from
the trained agent's folder, as in rl_zoo3.
"""

from __future__ import annotations

import sys

from sb3_gitstorm.zoo import run_zoo_script

if __name__ == "__main__":
    run_zoo_script("enjoy", sys.argv[1:])
