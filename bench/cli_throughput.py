"""Throughput of ``python -m yogapose predict <folder>`` with 1 and 2 worker processes.

    .venv/bin/python -m bench.cli_throughput [FOLDER] [--workers 1 2] [--repeat 2]

Runs the real command as a user would (a fresh interpreter, JSON Lines to a file) over the
folder (default: the 703 val photos in ../shared/data/yoga/val) and prints a Markdown table:
wall time from spawning the command to its exit (start-up and model loads included) and
images/s over that wall time, best of ``--repeat`` runs, plus the machine (CPU model from
``lscpu``, cores, load average at start). Each run's exit status must be 0 and its output
must hold one record per image, so a broken run cannot pass for a fast one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FOLDER = REPO.parent / "shared" / "data" / "yoga" / "val"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def one_run(folder: Path, workers: int, model: str | None) -> tuple[float, int, float]:
    """Wall seconds of one run, the number of records it wrote, and the CPU seconds it and
    its worker processes used (on a machine shared with other work, wall time alone hides
    whether a second worker found a free core)."""
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "out.jsonl"
        cmd = [sys.executable, "-m", "yogapose", "predict", str(folder), "--output", str(dest),
               "--workers", str(workers)]
        if model:
            cmd += ["--model", model]
        env = {**os.environ, "POWERTOOLS_LOG_LEVEL": "WARNING"}
        cpu0 = _children_cpu()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        cpu = _children_cpu() - cpu0
        if proc.returncode != 0:
            raise SystemExit(f"run with --workers {workers} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        records = [json.loads(line) for line in dest.read_text().splitlines()]
        return wall, len(records), cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--model", default=None, help="model .tflite (default: the shipped one)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average at start: {load}")
    print(f"folder: {args.folder}; best of {args.repeat} runs each\n")
    print("| workers | images | wall s (start-up included) | images/s | vs 1 worker | CPU s | CPU used / wall |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    base = None
    for workers in args.workers:
        best = min(one_run(args.folder, workers, args.model) for _ in range(args.repeat))
        wall, n, cpu = best
        rate = n / wall
        base = base or rate
        print(f"| {workers} | {n} | {wall:.1f} | {rate:.1f} | {rate / base:.2f}x | {cpu:.1f} | {cpu / wall:.2f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
