"""GITSTORM vs PPO vs SAC (and more) in one sweep: see ``python benchmarks/compare.py --help`` and ``sb3_gitstorm.comparison``.

python benchmarks/compare.py --config benchmarks/configs/cpu.yml --out runs/cpu
"""

import sys

from sb3_gitstorm.comparison.compare import main

if __name__ == "__main__":
    sys.exit(main())
