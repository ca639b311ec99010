"""Run a sweep in local worker processes or as Ray tasks, with curves on disk as they grow, and resume it.

Files under ``<out>/runs/`` (``<run>`` is ``<env>/<algo>/seed<k>``, see :attr:`RunSpec.name`):

- ``<run>.part``: a run in progress: a header line (``{"run": <spec>}``), then one JSON line per
  evaluation, flushed as it arrives;
- ``<run>.jsonl``: a finished run (header with the resolved hyperparameters and the run's torch
  threads, then every point),
  written in one atomic replace: a run counts as done only when this file exists;
- ``<run>.zip``: the trained model (``compare.py --save-models``), written before the ``.jsonl``;
- ``<run>.error``: the traceback of a failed run;
- ``<env>/random.json``: the random-policy score used for normalisation.

Resuming (running the same command again) skips finished runs and measured random scores, and
restarts unfinished runs from step 0, replacing their ``.part`` file: SB3 cannot continue a run from
a curve alone (GITSTORM would need its model and replay buffer checkpointed), and gluing a new
run onto an old partial curve would mix two trainings. Failed runs are retried.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue as queue_module
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

import sb3_gitstorm
from sb3_gitstorm.comparison.runner import random_policy_score, train_and_evaluate
from sb3_gitstorm.comparison.sweep_config import BenchmarkConfig, EnvSettings, RunSpec, env_slug
from sb3_gitstorm.save_util import atomic_write

__all__ = ["POLL_PERIOD", "LocalExecutor", "RayExecutor", "RunStore", "Sweep"]

# How long the sweep waits for a finished task before it reads the queue again (seconds).
POLL_PERIOD = 0.5


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, default=str) + "\n"


class RunStore:
    """The files of a sweep under ``<out>/runs/`` (see the module docstring)."""

    def __init__(self, out: Path) -> None:
        self.root = Path(out) / "runs"

    def path(self, spec: RunSpec, suffix: str) -> Path:
        return self.root / f"{spec.name}.{suffix}"

    def random_path(self, env_id: str) -> Path:
        return self.root / env_slug(env_id) / "random.json"

    def is_finished(self, spec: RunSpec) -> bool:
        """Whether ``spec`` has a finished curve; raises if that curve was made with other settings."""
        path = self.path(spec, "jsonl")
        if not path.is_file():
            return False
        with path.open() as f:
            recorded = json.loads(f.readline())["run"]
        recorded.setdefault("zoo_algo", spec.zoo_algo)  # runs of sweeps before variants: a built-in algorithm's own
        expected = json.loads(json.dumps(spec.to_dict()))
        if recorded != expected:
            changed = sorted(key for key in expected if recorded.get(key) != expected[key])
            raise ValueError(
                f"{path} was made with other settings ({', '.join(changed)} differ from the configuration); "
                "use another --out folder or delete that file to run it again"
            )
        return True

    def start(self, spec: RunSpec) -> None:
        path = self.path(spec, "part")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_json_line({"run": spec.to_dict()}))
        self.path(spec, "error").unlink(missing_ok=True)

    def append(self, spec: RunSpec, point: dict[str, float]) -> None:
        with self.path(spec, "part").open("a") as f:
            f.write(_json_line(point))

    def finish(self, spec: RunSpec, result: dict[str, Any]) -> None:
        # The threads too: float sums change order with them, so one seed's runs drift apart across --workers.
        if "model" in result:
            atomic_write(self.path(spec, "zip"), "zip", lambda tmp: Path(tmp).write_bytes(result["model"]))
        header = {"run": spec.to_dict(), "hyperparams": result["hyperparams"], "torch_threads": result["torch_threads"]}
        lines = [_json_line(header)]
        lines += [_json_line(point) for point in result["points"]]
        atomic_write(self.path(spec, "jsonl"), "jsonl", lambda tmp: Path(tmp).write_text("".join(lines)))
        self.path(spec, "part").unlink(missing_ok=True)

    def fail(self, spec: RunSpec, error: BaseException) -> None:
        self.path(spec, "error").parent.mkdir(parents=True, exist_ok=True)
        self.path(spec, "error").write_text("".join(traceback.format_exception(error)))

    def curve(self, spec: RunSpec) -> list[dict[str, float]]:
        """The points of a finished run."""
        with self.path(spec, "jsonl").open() as f:
            return [json.loads(line) for line in f.readlines()[1:]]

    def random_score(self, env_id: str) -> dict[str, float] | None:
        path = self.random_path(env_id)
        return json.loads(path.read_text()) if path.is_file() else None

    def save_random_score(self, env_id: str, score: dict[str, float]) -> None:
        atomic_write(self.random_path(env_id), "json", lambda tmp: Path(tmp).write_text(json.dumps(score)))


class LocalExecutor:
    """Worker processes (spawn context: no CUDA or thread state inherited from the sweep process)."""

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._manager = context.Manager()
        self.queue = self._manager.Queue()
        self._pool = ProcessPoolExecutor(workers, mp_context=context)
        # Share the cores: each run gets its part as torch threads.
        self.threads = max(1, len(os.sched_getaffinity(0)) // workers)

    def submit(self, fn: Callable[..., Any], *args: Any, **resources: float) -> Future:
        """``fn(*args)`` in a worker process (``resources`` are Ray's: the workers share the cores evenly)."""
        return self._pool.submit(fn, *args)

    def close(self) -> None:
        # Runs still going stop with the sweep: left alone they would train on for an hour with nobody to
        # record them (an interrupted run restarts from step 0 anyway). No public API before Python 3.14.
        for process in list((self._pool._processes or {}).values()):
            process.terminate()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._manager.shutdown()


class RayExecutor:
    """Ray tasks on an existing cluster (``address`` ``"auto"`` or ``"ray://..."``), or on a new local one (``"local"``).

    This package is shipped to the workers (``runtime_env.py_modules``), so they run the sweep's
    version of it; their Python environment must provide its dependencies.
    """

    def __init__(self, address: str, resources: dict[str, float], local_cpus: int) -> None:
        import ray
        from ray.util.queue import Queue

        self._ray = ray
        ray.init(
            address=address,
            num_cpus=local_cpus if address == "local" else None,
            runtime_env={"py_modules": [sb3_gitstorm]},
            include_dashboard=False,
        )
        self.queue = Queue()
        self.threads = max(1, int(resources.get("num_cpus", 1)))
        self._remote: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], *args: Any, **resources: float) -> Future:
        """``fn(*args)`` as a Ray task that holds ``resources`` (e.g. ``num_cpus=1, num_gpus=0.5``)."""
        if fn not in self._remote:  # one registration per function, not per task
            self._remote[fn] = self._ray.remote(fn)
        return self._remote[fn].options(**resources).remote(*args).future()

    def close(self) -> None:
        self._ray.shutdown()


class Sweep:
    """Runs the runs of a plan that are not finished yet, and the random-policy measurements normalisation needs.

    Parameters
    ----------
    config : BenchmarkConfig
        The configuration.
    runs : list of RunSpec
        Every run of the sweep (see :func:`~sb3_gitstorm.comparison.sweep_config.plan`).
    out : Path
        Output folder.
    console : Console
        Where notes and the progress bars go.
    save_models : bool
        Keep each trained model as ``<run>.zip`` (``GITSTORM.load`` / the zoo algorithm's ``load`` reads it).
    """

    def __init__(
        self, config: BenchmarkConfig, runs: list[RunSpec], out: Path, console: Console, save_models: bool = False
    ) -> None:
        self.config, self.runs, self.console, self.save_models = config, runs, console, save_models
        self.store = RunStore(out)
        self.todo = [spec for spec in runs if not self.store.is_finished(spec)]
        self.random_todo = [env for env in config.envs if env.measures_random and self.store.random_score(env.env_id) is None]
        self.failed: list[RunSpec] = []
        self.bars: dict[str, TaskID] = {}  # progress bars of the runs in progress

    def run(self, workers: int, ray_address: str | None = None) -> None:
        """Run what is left, ``workers`` at a time (local processes) or as Ray tasks on ``ray_address``."""
        if not self.todo and not self.random_todo:
            self.console.print(f"All {len(self.runs)} runs are finished.")
            return
        restarted = [spec.name for spec in self.todo if self.store.path(spec, "part").is_file()]
        if restarted:
            self.console.print(f"Restarting {len(restarted)} unfinished run(s) from step 0: {', '.join(restarted)}")
        executor = LocalExecutor(workers) if ray_address is None else RayExecutor(ray_address, self.config.resources, workers)
        try:
            self._run(executor)
        finally:
            executor.close()

    def _run(self, executor: LocalExecutor | RayExecutor) -> None:
        by_name = {spec.name: spec for spec in self.todo}
        handlers: dict[Future, Callable[[Future], None]] = {}
        for env in self.random_todo:
            future = executor.submit(random_policy_score, env.env_id, env.env_kwargs, env.eval_episodes, num_cpus=1)
            handlers[future] = lambda future, env=env: self._random_done(env, future)  # type: ignore[misc]
        for spec in self.todo:
            future = executor.submit(
                train_and_evaluate,
                spec,
                self.config.device,
                executor.threads,
                executor.queue,
                self.save_models,
                **self.config.resources,
            )
            handlers[future] = lambda future, spec=spec: self._run_done(spec, future)  # type: ignore[misc]

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.console) as self.progress:
            self.overall = self.progress.add_task("runs done", total=len(self.runs), completed=len(self.runs) - len(self.todo))
            while handlers:
                done, _ = wait(handlers, timeout=POLL_PERIOD, return_when=FIRST_COMPLETED)
                # A task puts its messages before it returns: read them before handling its end.
                self._read_messages(executor.queue, by_name)
                for future in done:
                    handlers.pop(future)(future)

    def _read_messages(self, queue: Any, by_name: dict[str, RunSpec]) -> None:
        while True:
            try:
                name, kind, payload = queue.get_nowait()
            except queue_module.Empty:
                return
            spec = by_name[name]
            if name not in self.bars:  # the run's first message: it started
                self.store.start(spec)
                self.bars[name] = self.progress.add_task(f"  {name}", total=spec.budget)
            if kind == "point":
                self.store.append(spec, payload)
            self.progress.update(self.bars[name], completed=payload["step"] if kind == "point" else payload)

    def _run_done(self, spec: RunSpec, future: Future) -> None:
        bar = self.bars.pop(spec.name, None)
        if bar is not None:
            self.progress.remove_task(bar)
        error = future.exception()
        if error is None:
            self.store.finish(spec, future.result())
            self.progress.advance(self.overall)
        else:
            self.failed.append(spec)
            self.store.fail(spec, error)
            self.console.print(f"[red]{spec.name} failed[/red]: {error!r} (traceback in {self.store.path(spec, 'error')})")

    def _random_done(self, env: EnvSettings, future: Future) -> None:
        error = future.exception()
        if error is not None:  # the report goes on without that environment's normalised scores
            self.console.print(f"[red]Measuring the random policy on {env.env_id} failed[/red]: {error!r}")
            return
        score = future.result()
        self.store.save_random_score(env.env_id, score)
        self.console.print(f"Random policy on {env.env_id}: {score['mean_return']:.1f} over {score['episodes']} episodes")
