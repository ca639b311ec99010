"""Every GPU claim of the library in one command: the CUDA tests, the paper-size loop's speed, and Atari end to end.

On the lent GPU machine (no package registry there, so the missing wheels travel in ``.whl/``, see
``benchmarks/gpu_check.sh``)::

    bash benchmarks/gpu_check.sh --download   # here, once, with the internet: fills .whl/ (about 4 MB, git-ignored)
    # then the device tool, in the same checkout (at most about 6.5 minutes; the parts' budgets add up to 5.7):
    #   run(command="set -o pipefail; bash benchmarks/gpu_check.sh --out $OUT 2>&1 | tee $OUT/gpu_check.log",
    #       carry=[".whl"], timeout_s=450)
    # a rerun of the parts that failed, on half their budgets (about 3 minutes):
    #   run(command="set -o pipefail; bash benchmarks/gpu_check.sh --out $OUT --parts throughput,atari --budget-scale 0.5
    #       2>&1 | tee $OUT/gpu_check.log", carry=[".whl"], timeout_s=240)

Anywhere the package is installed::

    python benchmarks/gpu_check.py --out gpu_check                              # CUDA: about 5 minutes on an H100
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpu_check    # the same code paths, tiny, on the CPU

Parts, in order, each with its own time budget in seconds (``--budget-scale`` multiplies them all); a part that
runs out of time keeps what it measured and notes what it skipped:

1. ``environment``: GPU name, memory, compute capability, driver, CUDA, cuDNN, torch and package versions.
2. ``tests``: the test suite's CUDA subset (``pytest -m cuda tests/test_cuda.py``: a tiny model's learn / predict /
   save / load / resume on ``cuda`` with bf16 and fp32 and the replay on the device, both priors, both
   ``imagine_starts``; bf16 and fp32 losses of one batch within a stated tolerance). Without a GPU they are
   collected and skipped, and the part says so.
3. ``throughput``: ``throughput.py``'s phases at paper size (size ``base``, 64x64 RGB on a synthetic env, 16 x 64
   world-model windows, 1024 x 16 imagined steps): world-model update, imagination, actor-critic update and the
   full env step, with synchronised timers and the peak GPU memory, for bf16 + TF32 (GITSTORM's CUDA default),
   fp32 + TF32, fp32, the replay off the device, the MLP prior and batch starts; and from the default's env step a
   projected wall-clock for one Atari 100k run (100k env steps, one update each).
4. ``atari``: a paper-size GITSTORM on one Atari game (STORM protocol, life loss ends the training episode) until
   its budget runs out: random warm-up steps, then training steps with a TensorBoard dream (image + video, the
   video needs ``moviepy<2``) every ``log_video_interval`` updates; env steps per second of both phases.

``--quick`` runs the same code at tiny sizes; CUDA-only measurements (GPU name, TF32) are reported as skipped with the
reason. ``gpu_check.json`` and ``gpu_check.md`` (the summary) are written to ``--out`` after every part, so a run cut
short keeps what it finished; the dream's last image and video are copied out of the event file
(``dream_filmstrip.png``, ``dream_video.gif``).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from sb3_gitstorm import GITSTORM
from sb3_gitstorm.dreams import tensorboard_video_supported

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("throughput", Path(__file__).with_name("throughput.py"))
throughput = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(throughput)

PARTS = ("environment", "tests", "throughput", "atari")
# Seconds per part (GPU paper size, and --quick); the environment part takes a second.
BUDGETS = {"tests": (90.0, 60.0), "throughput": (150.0, 40.0), "atari": (100.0, 8.0)}
ATARI_100K_STEPS = 100_000
PACKAGES = ("stable-baselines3", "gymnasium", "ale-py", "tensorboard", "moviepy", "numpy", "pytest")
ENVIRONMENT_ROWS = ("gpu", "gpu_memory_bytes", "compute_capability", "driver", "torch", "torch_cuda", "cudnn", "python", "cpu")
DREAM_TAGS = {"filmstrip": "imagination/filmstrip", "video": "imagination/video"}
# bf16 autocast, TF32, replay on the device, prior, imagine_starts; the first is GITSTORM's CUDA default.
CONFIGS = (
    (True, True, True, "maskgit", "replay"),
    (False, True, True, "maskgit", "replay"),
    (False, False, True, "maskgit", "replay"),
    (True, True, False, "maskgit", "replay"),
    (True, True, True, "mlp", "replay"),
    (True, True, True, "maskgit", "batch"),
)
# --quick: the Atari run at the test suite's tiny settings (GITSTORM's defaults are the paper's).
QUICK_ATARI = dict(policy_kwargs=dict(size="tiny"), learning_starts=64, buffer_size=2_000, batch_size=4, batch_length=8)
QUICK_ATARI.update(imagine_batch_size=16, imagine_context_length=4, imagine_horizon=4)


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_gpu_memory(device: th.device) -> None:
    gc.collect()
    if device.type == "cuda":
        th.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ 1. environment
def environment(args: argparse.Namespace, device: th.device, budget: float) -> dict[str, Any]:
    """Machine, GPU and software versions."""
    info: dict[str, Any] = throughput.machine_info(device)
    info["cuda_available"] = th.cuda.is_available()
    info["torch_cuda"] = th.version.cuda
    info["cudnn"] = th.backends.cudnn.version() if th.backends.cudnn.is_available() else None
    info["packages"] = {}
    for name in PACKAGES:
        try:
            info["packages"][name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info["packages"][name] = None
    info["tensorboard_video"] = tensorboard_video_supported()
    notes = []
    if device.type == "cuda":
        props = th.cuda.get_device_properties(device)
        info.update(
            gpu_memory_bytes=props.total_memory,
            compute_capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            bf16_supported=th.cuda.is_bf16_supported(),
        )
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        try:
            info["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
            info["driver"] = info["nvidia_smi"].split(", ")[1]
        except (OSError, subprocess.SubprocessError, IndexError) as error:
            notes.append(f"driver version not read (nvidia-smi: {error})")
    else:
        notes.append(f"device {device}: GPU name, memory and driver not measured (CUDA only)")
    memory = f"{mib(info['gpu_memory_bytes'])} MiB" if "gpu_memory_bytes" in info else "-"
    log(
        f"{info.get('gpu', 'no GPU')}, {memory}, driver {info.get('driver', '-')}, CUDA {th.version.cuda}, torch {th.__version__}"
    )
    return {"status": "done", **info, "notes": notes}


# ------------------------------------------------------------------------------------------------ 2. tests
def tests(args: argparse.Namespace, device: th.device, budget: float) -> dict[str, Any]:
    """``pytest -m cuda`` on tests/test_cuda.py in a subprocess, its results read from a JUnit XML file."""
    junit = args.out / "cuda_tests.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    command.append("tests/test_cuda.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result: dict[str, Any] = {"command": shlex.join(["python", *command[1:]]), "notes": []}
    try:
        run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout.decode(errors="replace") if isinstance(expired.stdout, bytes) else expired.stdout or ""
        return {
            **result,
            "status": "partial",
            "output_tail": output[-3000:],
            "notes": [f"stopped at its budget ({budget:.0f} s)"],
        }
    result["exit_code"] = run.returncode
    result["output_tail"] = (run.stdout + run.stderr)[-3000:]
    if not junit.exists():
        return {**result, "status": "failed", "notes": [f"pytest wrote no report (exit code {run.returncode})"]}
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    junit.unlink()  # its content is in the JSON: fewer files to bring back
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    failures = []
    for case in suite.iter("testcase"):
        for outcome in ("failure", "error"):
            element = case.find(outcome)
            if element is not None:
                failures.append(f"{case.get('name')}: {outcome}: {(element.get('message') or '')[:300]}")
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    result.update(passed=passed, failed=counts["failures"], errors=counts["errors"], skipped=counts["skipped"])
    result["failures"] = failures
    if counts["skipped"] and not th.cuda.is_available():
        result["notes"].append(f"no CUDA device: the {counts['skipped']} CUDA tests were collected and skipped")
    return {**result, "status": "done" if run.returncode in (0, 1) else "failed"}


# ------------------------------------------------------------------------------------------- 3. throughput
def throughput_argv(args: argparse.Namespace, bf16: bool, tf32: bool, on_device: bool, prior: str, starts: str) -> list[str]:
    """``throughput.py`` arguments of one configuration (paper size, or tiny with --quick)."""
    if args.quick:
        argv = ["--size", "tiny", "--batch-scale", "0.02", "--repeats", "1", "--warmup", "1", "--loop-steps", "2"]
        argv += ["--loop-rounds", "1", "--fill", "70"]
    else:
        argv = ["--size", "base", "--repeats", "6", "--warmup", "2", "--loop-steps", "6", "--loop-rounds", "2"]
    argv += ["--policy", "cnn", "--device", args.device, "--skip-naive", "--no-progress", "--prior", prior]
    argv += ["--imagine-starts", starts, "--matmul-precision", "high" if tf32 else "highest"]
    return argv + ["--bf16"] * bf16 + ["--replay-on-device"] * on_device


def config_name(bf16: bool, tf32: bool, on_device: bool, prior: str, starts: str) -> str:
    """E.g. ``"bf16+tf32"`` for GITSTORM's CUDA default, ``"fp32, mlp prior"`` for one that differs from it."""
    name = ("bf16" if bf16 else "fp32") + ("+tf32" if tf32 else "")
    differences = [("host replay", not on_device), ("mlp prior", prior == "mlp"), ("batch starts", starts == "batch")]
    return ", ".join([name, *(label for label, differs in differences if differs)])


def loop_throughput(args: argparse.Namespace, device: th.device, budget: float) -> dict[str, Any]:
    """throughput.py's ``measure`` for each of :data:`CONFIGS` that fits the budget, and the Atari 100k projection."""
    start, cuda = time.perf_counter(), device.type == "cuda"
    configs, skipped, notes, longest = [], [], [], 0.0
    precision, cudnn_tf32 = th.get_float32_matmul_precision(), th.backends.cudnn.allow_tf32
    try:
        for bf16, tf32, on_device, prior, starts in CONFIGS:
            name = config_name(bf16, tf32 and cuda, on_device, prior, starts)
            if tf32 and not bf16 and not cuda:
                skipped.append({"name": config_name(bf16, tf32, on_device, prior, starts), "reason": "TF32 is CUDA only"})
                continue
            if time.perf_counter() - start + longest > budget:
                skipped.append({"name": name, "reason": f"the part's budget ({budget:.0f} s) ran out"})
                continue
            tf32 = tf32 and cuda
            log(f"throughput: {name}")
            began = time.perf_counter()
            settings = throughput.parse_args(throughput_argv(args, bf16, tf32, on_device, prior, starts))
            row = dict(name=name, bf16=bf16, tf32=tf32, replay_on_device=on_device, prior=prior, imagine_starts=starts)
            try:
                row.update(throughput.measure(settings, prior, starts, device))
            except Exception as error:  # e.g. out of GPU memory: the other configurations still run
                row["error"] = f"{type(error).__name__}: {error}"
            row["seconds"] = time.perf_counter() - began
            longest = max(longest, row["seconds"])
            configs.append(row)
            free_gpu_memory(device)
    finally:  # measure() set them for its rows; the Atari part gets GITSTORM's own choice
        th.set_float32_matmul_precision(precision)
        th.backends.cudnn.allow_tf32 = cudnn_tf32
    settings = throughput.parse_args(throughput_argv(args, True, True, True, "maskgit", "replay"))
    shape = {
        "size": settings.size,
        "batch": f"{max(1, round(16 * settings.batch_scale))} x 64",
        "imagination": f"{settings.imagine_batch} x 16",
    }
    default = configs[0] if configs and "ms" in configs[0] else None  # GITSTORM's CUDA default, measured
    projection = None
    if default is not None:
        for row in configs:
            if "ms" in row:
                row["relative_to_default"] = {phase: ms / default["ms"][phase] for phase, ms in row["ms"].items()}
        step_s = default["ms"]["loop_step"] / 1e3
        projection = {
            "config": default["name"],
            "env_step_ms": default["ms"]["loop_step"],
            "hours": ATARI_100K_STEPS * step_s / 3600,
            "replay_bytes_100k": default["replay_bytes_per_frame"] * ATARI_100K_STEPS,
            "peak_gpu_bytes": default.get("peak_gpu_bytes"),
            "basis": "100k env steps x the full-loop step of the synthetic 64x64 env (its env step is nearly free; "
            "the Atari part measures ALE's); the 1024 random warm-up steps counted as training steps",
        }
    if skipped:
        notes.append(f"{len(skipped)} configuration(s) skipped")
    status = "done" if not skipped or all("CUDA" in s["reason"] for s in skipped) else "partial"
    return {"status": status, "shape": shape, "configs": configs, "skipped": skipped, "projection": projection, "notes": notes}


# ------------------------------------------------------------------------------------------------ 4. atari
class Deadline(throughput.StepClock):
    """:class:`throughput.StepClock` (a synchronised time stamp per env step) that stops ``learn`` at a deadline."""

    def __init__(self, device: th.device, seconds: float) -> None:
        super().__init__(device)
        self.deadline = time.perf_counter() + seconds

    def _on_step(self) -> bool:
        super()._on_step()
        return self.stamps[-1] < self.deadline


def read_dreams(log_dir: Path, out: Path) -> dict[str, int]:
    """How many dream images / videos the event files under ``log_dir`` hold; the last of each copied to ``out``."""
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={IMAGES: 0})
    events.Reload()
    counts = {}
    for kind, tag in DREAM_TAGS.items():
        images = events.Images(tag) if tag in events.Tags()["images"] else []
        counts[kind] = len(images)
        if images:
            (out / ("dream_filmstrip.png" if kind == "filmstrip" else "dream_video.gif")).write_bytes(
                images[-1].encoded_image_string
            )
    return counts


def atari(args: argparse.Namespace, device: th.device, budget: float) -> dict[str, Any]:
    """A paper-size GITSTORM (tiny with --quick) on one Atari game until the budget runs out."""
    if importlib.util.find_spec("ale_py") is None:
        return {"status": "skipped", "notes": ["ale-py is not installed (pip install 'sb3-gitstorm[atari]')"]}
    from sb3_gitstorm.envs import make_atari_env

    began = time.perf_counter()
    kwargs: dict[str, Any] = dict(QUICK_ATARI) if args.quick else {}
    kwargs["log_video_interval"] = 2 if args.quick else 50
    env = make_atari_env(args.game, n_envs=1, seed=0)
    model = GITSTORM("CnnPolicy", env, tensorboard_log=str(args.out / "tensorboard"), seed=0, device=device, **kwargs)
    with model.policy.autocast(model.mixed_precision):  # mixed_precision=None: the policy decides
        bf16 = th.is_autocast_enabled(device.type)
    result: dict[str, Any] = {
        "game": args.game,
        "size": model.policy.size,
        "bf16": bf16,
        "replay_on_device": model.replay_buffer.on_device,
        "learning_starts": model.learning_starts,
        "log_video_interval": model.log_video_interval,
        "tensorboard_video_supported": tensorboard_video_supported(),
        "notes": [],
    }
    if device.type == "cuda":
        th.cuda.reset_peak_memory_stats(device)
    clock = Deadline(device, budget - (time.perf_counter() - began))
    model.learn(10 * ATARI_100K_STEPS, callback=clock, log_interval=1, tb_log_name="gpu_check")
    model.logger.dump(model.num_timesteps)  # what was recorded since the last episode's end
    model.logger.close()
    stamps, warmup = np.array(clock.stamps), model.learning_starts
    result.update(env_steps=model.num_timesteps, updates=model._n_updates)
    result["episodes"] = len(model.ep_info_buffer)
    if model.ep_info_buffer:
        result["mean_game_score"] = float(np.mean([info["r"] for info in model.ep_info_buffer]))
    if len(stamps) >= warmup:
        result["random_steps_per_s"] = (warmup - 1) / (stamps[warmup - 1] - stamps[0])
    if len(stamps) > warmup + 1:
        intervals = np.diff(stamps[warmup - 1 :])
        result["train_steps_per_s"] = len(intervals) / intervals.sum()
        result["train_step_ms_median"] = 1e3 * statistics.median(intervals)
        result["projected_atari100k_hours"] = ATARI_100K_STEPS * statistics.median(intervals) / 3600
    else:
        result["notes"].append("the budget ran out before two training steps")
    if device.type == "cuda":
        result["peak_gpu_bytes"] = th.cuda.max_memory_allocated(device)
    result["dreams"] = read_dreams(Path(model.logger.get_dir()), args.out)
    if not result["tensorboard_video_supported"]:
        result["notes"].append("no dream video: TensorBoard videos need moviepy<2 (the images were written)")
    env.close()
    return {"status": "done", **result}


# ------------------------------------------------------------------------------------------------- report
def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def markdown(report: dict[str, Any]) -> str:
    """The summary: one section per part, the measured figures and what was skipped."""
    parts = report["parts"]
    env = parts.get("environment", {})
    title = env.get("gpu") or f"no GPU ({report['device']})"
    lines = [f"# GPU check: {title}, {report['date']}", "", f"`{report['command']}`", ""]
    if env.get("status") == "done":
        lines += ["## Environment", "", "| | |", "| --- | --- |"]
        for key in ENVIRONMENT_ROWS:
            if env.get(key) is not None:
                lines.append(
                    f"| {key.removesuffix('_bytes')} | {mib(env[key]) + ' MiB' if key == 'gpu_memory_bytes' else env[key]} |"
                )
        packages = ", ".join(f"{name} {version}" for name, version in env["packages"].items() if version)
        lines += [f"| packages | {packages} |", ""]
    if (t := parts.get("tests")) and "passed" in t:
        counts = f"{t['passed']} passed, {t['failed']} failed, {t['errors']} errors, {t['skipped']} skipped"
        lines += ["## CUDA tests", "", f"`{t['command']}`: {counts} ({t['seconds']:.0f} s).", ""]
        lines += [f"- {failure}" for failure in t["failures"]] + [""] * bool(t["failures"])
    if (tp := parts.get("throughput")) and "configs" in tp:
        lines += throughput_section(tp)
    if (a := parts.get("atari")) and "env_steps" in a:
        lines += atari_section(a)
    notes = [f"- {name}: {part['status']}: {note}" for name, part in parts.items() for note in part.get("notes", [])]
    notes += [f"- {name}: {part['status']}" for name, part in parts.items() if part["status"] != "done" and not part.get("notes")]
    if notes:
        lines += ["## Notes and skipped parts", "", *notes, ""]
    return "\n".join(lines)


def throughput_section(part: dict[str, Any]) -> list[str]:
    shape = part["shape"]
    lines = [
        "## The training loop (throughput.py: synchronised timers, medians)",
        "",
        f"Size `{shape['size']}` on a synthetic 64x64 RGB env, world-model batch {shape['batch']}, imagination "
        f"{shape['imagination']} with the kv cache. Phases in ms; the last column: env step time over the first row's.",
        "",
        "| configuration | world model | imagination | actor-critic | env step | env steps/s | peak GPU MiB | vs first |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in part["configs"]:
        if "error" in row:
            lines.append(f"| {row['name']} | {row['error']} |" + " |" * 6)
            continue
        cells = [f"{row['ms'][phase]:.1f}" for phase in ("world_model", "imagine", "actor_critic", "loop_step")]
        relative = row.get("relative_to_default", {}).get("loop_step")
        cells += [
            f"{row['env_steps_per_s']:.2f}",
            mib(row.get("peak_gpu_bytes")),
            "-" if relative is None else f"{relative:.2f}x",
        ]
        lines.append(f"| {row['name']} | {' | '.join(cells)} |")
    lines += [""] * bool(part["skipped"]) + [f"- skipped {s['name']}: {s['reason']}" for s in part["skipped"]]
    if p := part["projection"]:
        lines += [
            "",
            "### Projected: one Atari 100k run",
            "",
            f"- {p['hours']:.1f} h from the `{p['config']}` env step ({p['env_step_ms']:.1f} ms): {p['basis']}.",
            f"- GPU memory: peak {mib(p['peak_gpu_bytes'])} MiB while timing (10k-step replay), plus "
            f"{p['replay_bytes_100k'] / 2**30:.2f} GiB for a 100k-step replay on the device.",
        ]
    return [*lines, ""]


def atari_section(part: dict[str, Any]) -> list[str]:
    dreams = part["dreams"]
    lines = [
        f"## Atari end to end: {part['game']}, size `{part['size']}`, STORM protocol",
        "",
        f"{part['env_steps']} env steps, {part['updates']} updates, {part['episodes']} whole games in {part['seconds']:.0f} s; "
        f"bf16 autocast {part['bf16']}, replay on the device {part['replay_on_device']}.",
        "",
    ]
    for label, key in (("random warm-up", "random_steps_per_s"), ("training (one update per step)", "train_steps_per_s")):
        if key in part:
            lines.append(f"- {label}: {part[key]:.1f} env steps/s")
    if "projected_atari100k_hours" in part:
        median = part["train_step_ms_median"]
        lines.append(
            f"- projected Atari 100k run at the median training step ({median:.0f} ms): {part['projected_atari100k_hours']:.1f} h"
        )
    if "peak_gpu_bytes" in part:
        lines.append(f"- peak GPU memory {mib(part['peak_gpu_bytes'])} MiB")
    every = part["log_video_interval"]
    lines.append(f"- TensorBoard dreams every {every} updates: {dreams['filmstrip']} images, {dreams['video']} videos written")
    return [*lines, ""]


def write(report: dict[str, Any], out: Path) -> str:
    """Write gpu_check.json and gpu_check.md; returns the summary. A summary that fails to render keeps the
    JSON and the run going (a GPU is lent for minutes): the file then holds the error."""
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    try:
        summary = markdown(report)
    except Exception:
        summary = f"# GPU check: the summary failed, the figures are in gpu_check.json\n\n```\n{traceback.format_exc()}```\n"
    (out / "gpu_check.md").write_text(summary)
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder of gpu_check.json, gpu_check.md and the dream files")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, ... or cpu (with --quick: a check of the script)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and budgets: the same code paths in about a minute")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every part's time budget")
    parser.add_argument("--game", default="Breakout", help="Atari game of the end-to-end run (short lives: frequent logs)")
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    if unknown := sorted(set(parts) - set(PARTS)):
        parser.error(f"unknown part(s) {unknown}; choose from {','.join(PARTS)}")
    if args.budget_scale <= 0:
        parser.error(f"--budget-scale must be > 0, got {args.budget_scale}")
    device = th.device(args.device)
    if device.type == "cuda" and not th.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device (use --device cpu --quick to check the script)")
    args.out.mkdir(parents=True, exist_ok=True)

    command = shlex.join(["python", "benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None else argv)])
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "command": command, "device": str(device)}
    report["quick"], report["parts"] = args.quick, {}
    functions: dict[str, Callable[[argparse.Namespace, th.device, float], dict[str, Any]]] = {
        "environment": environment,
        "tests": tests,
        "throughput": loop_throughput,
        "atari": atari,
    }
    for name in PARTS:
        if name not in parts:
            report["parts"][name] = {"status": "skipped", "notes": ["not in --parts"]}
            continue
        budget = args.budget_scale * BUDGETS[name][1 if args.quick else 0] if name in BUDGETS else 60.0
        log(f"{name} (budget {budget:.0f} s)")
        began = time.perf_counter()
        try:
            result = functions[name](args, device, budget)
        except Exception as error:  # one broken part must not cost the others' figures
            result = {
                "status": "failed",
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc()[-3000:],
            }
            result["notes"] = [result["error"]]
            log(result["traceback"])
        result.update(seconds=time.perf_counter() - began, budget_s=budget)
        report["parts"][name] = result
        free_gpu_memory(device)
        write(report, args.out)
        log(f"{name}: {result['status']} in {result['seconds']:.0f} s")
    print(write(report, args.out), flush=True)
    return report


if __name__ == "__main__":
    main()
