"""``python -m sb3_gitstorm.zoo.load_from_hub --algo gitstorm --env CartPole-v1 -orga <user> -f logs``: the zoo's download.

Takes every argument of ``python -m rl_zoo3.load_from_hub``: downloads ``<user>/gitstorm-CartPole-v1``
(the layout :mod:`sb3_gitstorm.zoo.push_to_hub` uploads) into the zoo's log folder, where
``python -m sb3_gitstorm.zoo.enjoy`` finds it.
"""

from __future__ import annotations

import sys

from sb3_gitstorm.zoo import run_zoo_script

if __name__ == "__main__":
    run_zoo_script("load_from_hub", sys.argv[1:])
