"""``python -m sb3_gitstorm.zoo.record_video --algo gitstorm --env CartPole-v1 -f logs -n 1000``: rl_zoo3's ``record_video``.

Takes every argument of ``python -m rl_zoo3.record_video``: loads the trained agent from the zoo's log
folder and writes an mp4 of it to ``-o`` (default: ``<run folder>/videos``). Needs ``moviepy``.
"""

from __future__ import annotations

import sys

from sb3_gitstorm.zoo import run_zoo_script

if __name__ == "__main__":
    run_zoo_script("record_video", sys.argv[1:])
