"""``python benchmarks/compare.py --config <yaml> --out <dir> [--env ID] [--budget N] [--seeds K ...] [--set algo.key=value]
[--workers N] [--ray-address]`` (``--env`` and ``--set`` repeatable).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from rich.console import Console

from sb3_gitstorm.comparison.report import Report
from sb3_gitstorm.comparison.sweep import Sweep
from sb3_gitstorm.comparison.sweep_config import load_config, plan


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM (kill, a scheduler's time limit) ends the sweep as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) a sweep and write its report; returns the exit status (1: a run failed, 2: bad
    configuration, 130: interrupted by Ctrl-C or SIGTERM)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python benchmarks/compare.py",
        description="Train every environment x algorithm x seed of a configuration, evaluate along the way and "
        "write results.json, summary.md and curves.png. Running the same command again resumes the sweep.",
    )
    parser.add_argument("--config", required=True, help="YAML configuration (see benchmarks/configs/)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="ID",
        help="run only this environment of the configuration (its id as the configuration spells it); repeatable",
    )
    parser.add_argument(
        "--budget",
        type=int,
        metavar="N",
        help="environment steps per run on every environment, instead of the configuration's budgets",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[],
        metavar="K",
        help="run these seeds instead of the configuration's (e.g. more seeds, in another --out folder)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ALGO.KEY=VALUE",
        help="override one hyperparameter of one algorithm on every environment (VALUE is YAML), "
        "e.g. --set gitstorm.imagine_starts=batch; repeatable",
    )
    parser.add_argument(
        "--save-models",
        action="store_true",
        help="keep each trained model as <out>/runs/<env>/<algo>/seed<k>.zip (runs finished before keep none)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="runs at a time in local worker processes (default: one per core); "
        "with --ray-address local, the CPUs of the Ray instance it starts",
    )
    parser.add_argument(
        "--ray-address",
        help="run the runs as Ray tasks: 'auto' (the cluster of this machine), 'ray://<head>:10001', or 'local' (start one here)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")

    console = Console(stderr=True)
    try:  # configuration errors, and finished runs in --out made with other settings
        config = load_config(args.config, args.set, args.env, args.budget, args.seeds)
        runs, skipped = plan(config)
        sweep = Sweep(config, runs, args.out, console, args.save_models)
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        return 2
    for skip in skipped:
        console.print(f"Skipping {skip.algo} on {skip.env_id}: {skip.reason}")
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        sweep.run(args.workers, args.ray_address)
    except KeyboardInterrupt:
        console.print("Interrupted: run the same command again to resume (unfinished runs restart from step 0).")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        Report(config, runs, skipped, sweep.store).write(args.out, " ".join(["python benchmarks/compare.py", *argv]))
        console.print(f"Wrote {args.out / 'summary.md'}, {args.out / 'results.json'} and {args.out / 'curves.png'}")
    return 1 if sweep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
