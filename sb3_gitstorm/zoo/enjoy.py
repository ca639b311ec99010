"""``python -m sb3_gitstorm.zoo.enjoy --algo gitstorm --env CartPole-v1 -f logs``: rl_zoo3's ``enjoy`` with GITSTORM.

Takes every argument of ``python -m rl_zoo3.enjoy``; the hyperparameters and env settings come from
the trained agent's folder, as in rl_zoo3.
"""

from __future__ import annotations

from rl_zoo3.enjoy import enjoy

import sb3_gitstorm.zoo  # noqa: F401  (registers GITSTORM and the environments)

if __name__ == "__main__":
    enjoy()
