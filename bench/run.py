"""One command for all the figures: ``python -m bench`` from the repo root (project venv).

Runs, one after another (never in parallel: the machine has two cores), the same model and
the same images through

* this project's handler, ``lambda_function.lambda_handler`` (fresh processes for cold start,
  one long-lived process for warm latency), for every model variant and thread count;
* the reference stack (tflite-runtime 2.14 + keras-image-helper 0.0.1, Python 3.11,
  numpy < 2) in ``bench/.ref-venv``, created on first use;
* plain Keras ``model(x)`` when a Python with TensorFlow is available;

plus the model's FLOPs, the CPU's matmul peak, dependency sizes, a loopback fetch
comparison and the import-time profile. Prints Markdown tables, saves raw results to
``bench/results/latest.json`` and (full runs) rewrites ``bench/REPORT.md``.

    python -m bench                    # full run, < ~10 min
    python -m bench --quick            # smoke run, < 1 min
    python -m bench --help
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from bench import report
from bench.float32 import float32_copy
from bench.images import IMAGE_NAMES, ensure_images
from bench.refenv import REF_VENV, ensure_ref_venv
from bench.wcommon import MARK, parse_messages, percentile
from yogapose.metadata import sha256_file

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VARIANTS = ("float32", "float16", "dynamic_int8", "full_int8")
DEFAULT_MODEL = REPO / "model" / "yoga-pose.tflite"
DEFAULT_VARIANTS_DIR = REPO / "build" / "variants"
DEFAULT_KERAS = REPO / "build" / "yoga-xception.keras"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- plans

class Plan:
    """Run counts. Full: medians/p95 over enough samples within ~10 min; quick: a smoke run.

    ``repeat`` multiplies every count and time budget (a busy machine needs more samples
    for the same medians); the Keras row's slow cold starts stay at their own count.
    """

    def __init__(self, quick: bool, repeat: float = 1.0):
        self.quick, self.repeat = quick, repeat
        if quick:
            self.cold_runs, self.keras_cold_runs, self.cold_discard = 1, 1, 0
            self.runs = {"photo-300.jpg": 3, "phone-12mp.jpg": 2, "alpha.png": 3, "wide-nobody.jpg": 2}
            self.budget_s, self.infer_runs, self.fetch_runs = 0.5, 3, 3
        else:
            self.cold_runs, self.keras_cold_runs, self.cold_discard = 7, 3, 1
            self.runs = {"photo-300.jpg": 40, "phone-12mp.jpg": 20, "alpha.png": 30, "wide-nobody.jpg": 20}
            self.budget_s, self.infer_runs, self.fetch_runs = 2.5, 40, 20
        if repeat != 1.0:
            def more(n: int) -> int:
                return max(1, round(n * repeat))

            self.cold_runs, self.infer_runs, self.fetch_runs = (
                more(self.cold_runs), more(self.infer_runs), more(self.fetch_runs))
            self.runs = {k: more(v) for k, v in self.runs.items()}
            self.budget_s *= repeat


# ----------------------------------------------------------------------------- processes

def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_worker(py: str, script: str, cfg: dict, env: dict, timeout: float = 300) -> dict:
    """Run a worker to completion; -> its last protocol message (or {"error": ...})."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            rc = subprocess.run([py, str(BENCH / script), json.dumps(cfg)], stdout=out, stderr=err,
                                env=env, cwd=REPO, timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            return {"error": f"{script} timed out after {timeout:.0f} s"}
        out.seek(0)
        err.seek(0)
        msgs = parse_messages(out.read())
        if rc != 0 or not msgs:
            tail = [ln for ln in err.read().strip().splitlines() if ln.strip()][-3:]
            return {"error": f"{script} exit {rc}: " + " | ".join(tail)[-500:]}
        return msgs[-1]


def cold_start(py: str, script: str, cfg: dict, env: dict, timeout: float = 120) -> dict:
    """Wall time from spawning a fresh interpreter to reading its first answer line."""
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([py, str(BENCH / script), json.dumps(cfg)], stdout=subprocess.PIPE,
                                stderr=err, env=env, cwd=REPO, text=True)
        msg, wall = None, None
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(MARK):
                    wall = time.perf_counter() - t0
                    msg = json.loads(line[len(MARK):])
                    break
            proc.stdout.read()
            proc.wait()
        finally:
            timer.cancel()
        if msg is None:
            err.seek(0)
            tail = [ln for ln in err.read().strip().splitlines() if ln.strip()][-3:]
            return {"error": f"{script} exit {proc.returncode}: " + " | ".join(tail)[-500:]}
        msg["wall_s"] = wall
        return msg


def summarize_cold(samples: list[dict]) -> dict:
    ok = [s for s in samples if "error" not in s]
    if not ok:
        return {"error": samples[0]["error"] if samples else "no runs"}
    walls = [s["wall_s"] * 1000 for s in ok]
    return {
        "median_ms": percentile(walls, 50), "p95_ms": percentile(walls, 95), "n": len(ok),
        "samples_ms": [round(w, 1) for w in walls],
        "import_ms": percentile([s["import_s"] * 1000 for s in ok], 50),
        "first_call_ms": percentile([s["first_call_s"] * 1000 for s in ok], 50),
        "rss_mb": max((s["rss"]["vmhwm_mb"] or s["rss"]["ru_maxrss_mb"]) for s in ok),
        "answer": ok[0].get("answer"), "kind": ok[0].get("kind"),
        "errors": len(samples) - len(ok),
    }


# ----------------------------------------------------------------------------- inputs

def resolve_models(args: argparse.Namespace) -> dict:
    """The shipped model, any variants from a training run, the Keras model, and the
    reference's model: a float32 copy of the shipped model's own weights (bench.float32)."""
    notes: list[str] = []
    missing: list[str] = []
    variants_dir, keras_model, model = Path(args.variants_dir), Path(args.keras_model), Path(args.model)
    variants = {v: variants_dir / f"yoga-pose-{v}.tflite" for v in VARIANTS}
    for v, p in variants.items():
        # The pipeline keeps a variant that failed verification apart, in build/rejected: it is
        # never shipped, but its speed is still worth a row.
        refused = variants_dir.parent / "rejected" / p.name
        if not p.exists() and refused.exists():
            variants[v] = refused
            notes.append(f"{v}: the copy the conversion refused (fails verification), from {refused.parent.name}/")
    have = {v: p for v, p in variants.items() if p.exists() and p.with_suffix(".json").exists()}
    missing += [str(p) for v, p in variants.items() if v not in have]
    if not keras_model.exists():
        missing.append(str(keras_model))
    if not (model.exists() and model.with_suffix(".json").exists()):
        missing.append(str(model))
        return {"variants": {}, "shipped_variant": None, "ref_model": None, "keras_model": None,
                "missing": missing, "notes": notes}

    # The reference runs the shipped weights, dequantized to float32 (tflite-runtime 2.14
    # cannot load the int8 kernels' op versions); ours runs that same flatbuffer as well.
    ref_model, note = (None, "reference skipped") if args.no_reference else float32_copy(model, log=log)
    notes.append(f"reference model: {note}")
    if ref_model is not None and ref_model != model:
        have["float32"] = ref_model
        notes.append("float32 row: the shipped weights dequantized (bench/float32.py), not a training variant")
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    have = {v: p for v, p in have.items() if v in wanted}
    digest = sha256_file(model)
    shipped_variant = next((v for v, p in have.items() if sha256_file(p) == digest), None)
    if shipped_variant is None:
        # Not one of the variants (or no variants): bench it under its own name.
        have = {"shipped": model, **have}
        shipped_variant = "shipped"
    return {"variants": {v: str(p) for v, p in have.items()}, "shipped_variant": shipped_variant,
            "ref_model": str(ref_model) if ref_model else None,
            "keras_model": str(keras_model) if keras_model.exists() else None,
            "missing": missing, "notes": notes}


def model_facts(path: str) -> dict:
    from bench.flops import model_flops

    meta_path = Path(path).with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    # One name per output: an open-set model adds its outlier output ("other").
    outlier = (meta.get("output") or {}).get("outlier_label")
    facts = {"path": path, "mb": Path(path).stat().st_size / 1e6, "sha256": sha256_file(Path(path)),
             "labels": meta.get("labels"), "quantization": meta.get("quantization"),
             "outputs": (meta.get("labels") or []) + ([outlier] if outlier else [])}
    try:
        facts["flops"] = model_flops(path)
    except Exception as exc:  # noqa: BLE001
        facts["flops_error"] = str(exc)[:200]
    return facts


def accuracy_table(variants_dir: Path) -> dict:
    """Per-variant validation accuracy written by convert/pipeline.py, when present."""
    path = variants_dir.parent / "variants.json"
    if not path.exists():
        return {}
    try:
        rows = json.loads(path.read_text())
    except ValueError:
        return {}
    return {r["variant"]: r for r in rows if "variant" in r}


# ----------------------------------------------------------------------------- side measurements

def matmul_peak(py: str, threads: list[int]) -> dict:
    out = {}
    for t in threads:
        env = worker_env(OPENBLAS_NUM_THREADS=str(t))
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
        proc = subprocess.run([py, str(BENCH / "peak.py"), str(t)], capture_output=True, text=True,
                              env=env, cwd=REPO, timeout=120, check=False)
        msgs = parse_messages(proc.stdout)
        out[str(t)] = msgs[-1] if msgs else {"error": proc.stderr.strip()[-300:]}
    out["env_had"] = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    return out


def pipfile_packages() -> list[str]:
    """The names under the Pipfile's [packages]: what the Lambda image installs."""
    with open(REPO / "Pipfile", "rb") as f:
        return sorted(tomllib.load(f).get("packages", {}))


def dep_sizes(ours_py: str, ref_py: str | None) -> dict:
    def one(py: str, roots: list[str]) -> dict:
        proc = subprocess.run([py, str(BENCH / "depsize.py"), *roots], capture_output=True, text=True, cwd=REPO,
                              check=False)
        msgs = parse_messages(proc.stdout)
        return msgs[-1] if msgs else {"error": proc.stderr.strip()[-300:]}

    core = ["ai-edge-litert", "numpy", "pillow"]
    out = {"ours_core": one(ours_py, core),
           "ours_runtime": one(ours_py, [*core, "aws-lambda-powertools", "pybase64"]),
           "ours_pipfile": one(ours_py, pipfile_packages())}
    if ref_py:
        out["ref"] = one(ref_py, ["tflite-runtime", "numpy", "pillow", "keras-image-helper"])
    return out


def import_profile(py: str, model: str, threads: int = 1) -> dict:
    """``python -X importtime -c "import lambda_function"``: the slowest top-level imports."""
    target = "lambda_function"
    env = worker_env(MODEL_PATH=model, NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.run([py, "-X", "importtime", "-c", f"import {target}"], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120, check=False)
    wall = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            rows.append({"self_us": int(m.group(1)), "cum_us": int(m.group(2)),
                         "depth": len(m.group(3)) // 2, "name": m.group(4)})
    top = [r for r in rows if r["depth"] == 0]
    mods = {r["name"] for r in rows}
    heavy = sorted(n for n in mods if n.split(".")[0] in
                   {"tensorflow", "keras", "boto3", "botocore", "requests", "scipy", "pandas", "matplotlib",
                    "aws_lambda_powertools", "pydantic", "urllib3", "jmespath", "ai_edge_litert", "tflite_runtime"}
                   and "." not in n)
    by_pkg: dict[str, float] = {}
    for r in rows:
        root = r["name"].split(".")[0]
        by_pkg[root] = by_pkg.get(root, 0) + r["self_us"] / 1000
    return {"target": target, "rc": proc.returncode, "wall_ms": wall * 1000,
            "by_package_ms": dict(sorted(by_pkg.items(), key=lambda kv: -kv[1])[:12]),
            "total_import_ms": sum(r["cum_us"] for r in top) / 1000,
            "top": sorted(top, key=lambda r: -r["cum_us"])[:10],
            "top_nested": sorted([r for r in rows if r["depth"] <= 2], key=lambda r: -r["self_us"])[:12],
            "heavy_modules": heavy, "n_modules": len(rows),
            "error": proc.stderr.strip().splitlines()[-1][:300] if proc.returncode else None}


class _ImageServer(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self):
        body = self.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):  # quiet
        pass


def fetch_bench(ours_py: str, ref_py: str | None, images: dict[str, Path], plan: Plan) -> dict:
    """Our guarded fetch vs keras-image-helper's urllib download, same loopback server."""
    names = ["photo-300.jpg", "phone-12mp.jpg"]
    handler = type("H", (_ImageServer,), {"files": {n: images[n].read_bytes() for n in names}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        urls = [base + n for n in names]
        cfg = {"mode": "fetch", "urls": urls, "runs": plan.fetch_runs, "budget_s": plan.budget_s}
        ours = run_worker(ours_py, "ours_worker.py", cfg, worker_env(), timeout=120)
        ref = run_worker(ref_py, "ref_worker.py", cfg, worker_env(), timeout=120) if ref_py else {"error": "skipped"}
    finally:
        server.shutdown()
        server.server_close()

    def by_name(res: dict) -> dict:
        if "error" in res:
            return res
        return {u.rsplit("/", 1)[-1]: v for u, v in res.items()}

    return {"ours": by_name(ours), "ref": by_name(ref), "sizes": {n: images[n].stat().st_size for n in names}}


# ----------------------------------------------------------------------------- machine

#: Vector extensions that change which XNNPACK kernels run, by their /proc/cpuinfo flags.
CPU_FEATURES = {"AVX2": ("avx2",), "AVX-512": ("avx512f",), "VNNI": ("avx512_vnni", "avx_vnni"),
                "AMX": ("amx_tile",)}


def cpu_features(flags: str) -> dict[str, bool]:
    """``{"AVX2": True, "AVX-512": False, ...}`` from a /proc/cpuinfo ``flags`` line."""
    have = set(flags.split())
    return {name: any(f in have for f in needed) for name, needed in CPU_FEATURES.items()}


def machine_info(ours_py: str, ref_py: str | None, keras_py: str | None) -> dict:
    cpu, flags = "?", ""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    if m := re.search(r"model name\s*:\s*(.*)", text):
        cpu = m.group(1).strip()
    if m := re.search(r"flags\s*:\s*(.*)", text):
        flags = m.group(1)
    mem_gb = None
    try:
        m = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    except OSError:
        m = None
    if m:
        mem_gb = int(m.group(1)) / 1024 / 1024

    def versions(py: str | None, names: list[str]) -> dict:
        if not py:
            return {}
        code = ("import sys, json, importlib.metadata as m\nout={'python': sys.version.split()[0]}\n"
                f"for n in {names!r}:\n"
                "    try: out[n]=m.version(n)\n    except Exception: out[n]=None\nprint(json.dumps(out))")
        proc = subprocess.run([py, "-c", code], capture_output=True, text=True, check=False)
        try:
            return json.loads(proc.stdout)
        except ValueError:
            return {}

    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cores": os.cpu_count(), "mem_gb": mem_gb,
        "cpu_features": cpu_features(flags),
        "kernel": platform.release(), "loadavg_start": os.getloadavg(),
        "ours": versions(ours_py, ["ai-edge-litert", "numpy", "pillow", "aws-lambda-powertools", "pybase64"]),
        "ref": versions(ref_py, ["tflite-runtime", "numpy", "pillow", "keras-image-helper"]),
        "keras": versions(keras_py, ["tensorflow-cpu", "tensorflow", "keras", "numpy"]),
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=REPO, check=False).stdout.strip(),
    }


def find_keras_python(explicit: str | None) -> str | None:
    """``--keras-python``, else this interpreter when it has TensorFlow (``.ci/setup --dev``)."""
    if explicit:
        return explicit if explicit.lower() != "none" else None
    import importlib.util

    return sys.executable if importlib.util.find_spec("tensorflow") else None


# ----------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="the shipped model (default: %(default)s)")
    p.add_argument("--variants-dir", default=str(DEFAULT_VARIANTS_DIR),
                   help="dir with yoga-pose-{float32,float16,dynamic_int8,full_int8}.tflite (+ .json)")
    p.add_argument("--keras-model", default=str(DEFAULT_KERAS), help="float32 Keras model for the model(x) row")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of variants")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--quick", action="store_true",
                   help="smoke run (< 1 min): few runs, 1 thread, the shipped model and its float32 copy only")
    p.add_argument("--repeat", type=float, default=1.0,
                   help="multiply every run count and time budget (e.g. 2 on a busy machine; default 1)")
    p.add_argument("--no-reference", action="store_true", help="skip the tflite-runtime reference stack")
    p.add_argument("--no-keras", action="store_true", help="skip the plain Keras row")
    p.add_argument("--no-fetch", action="store_true", help="skip the loopback fetch comparison")
    p.add_argument("--ref-python", default=None, help="Python 3.11 used to create bench/.ref-venv")
    p.add_argument("--keras-python", default=None, help="Python with TensorFlow ('none' to skip); default: auto")
    p.add_argument("--json", default=str(BENCH / "results" / "latest.json"), help="raw results file")
    p.add_argument("--report", default=None,
                   help="Markdown report to (re)write; default bench/REPORT.md for full runs, none for --quick")
    return p.parse_args(argv)


def build_configs(found: dict, threads: list[int], ours_py: str, ref_py: str | None,
                  keras_py: str | None) -> tuple[list[dict], Path | None]:
    """Every (stack, model, threads) to measure, shipped variant first so its figures are the
    freshest comparison; -> (configs, the no-.pyc task root to delete afterwards)."""
    order = sorted(found["variants"], key=lambda v: (v != found["shipped_variant"],
                                                     VARIANTS.index(v) if v in VARIANTS else -1))
    configs = []
    for t in threads:
        if ref_py and found["ref_model"]:
            configs.append({"id": f"ref/float32/t{t}", "stack": "reference", "variant": "float32", "threads": t,
                            "py": ref_py, "script": "ref_worker.py", "model": found["ref_model"]})
        for v in order:
            # The shipped model also measures what its person crop adds (issue 10's budget).
            configs.append({"id": f"ours/{v}/t{t}", "stack": "ours", "variant": v, "threads": t,
                            "py": ours_py, "script": "ours_worker.py", "model": found["variants"][v],
                            "crop_cost": v == found["shipped_variant"]})
        if keras_py and found["keras_model"]:
            configs.append({"id": f"keras/float32/t{t}", "stack": "keras", "variant": "float32", "threads": t,
                            "py": keras_py, "script": "keras_worker.py", "model": found["keras_model"]})
    v = found["shipped_variant"]
    shipped = {"stack": "ours", "variant": v, "threads": threads[0], "py": ours_py, "script": "ours_worker.py",
               "model": found["variants"][v], "cold_only": True}
    # The image ships lambda_function.py + yogapose/ without __pycache__ (and /var/task is
    # read-only), so every cold start compiles the app's sources: measure that case too.
    nopyc_root = Path(tempfile.mkdtemp(prefix="bench-taskroot-"))
    shutil.copytree(REPO / "yogapose", nopyc_root / "yogapose", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "lambda_function.py", nopyc_root / "lambda_function.py")
    configs.append({**shipped, "id": f"ours/{v}/t{threads[0]}/nopyc", "task_root": str(nopyc_root)})
    # numpy's OpenBLAS starts one thread per core at import; serving never uses BLAS.
    configs.append({**shipped, "id": f"ours/{v}/t{threads[0]}/openblas1", "env": {"OPENBLAS_NUM_THREADS": "1"}})
    return configs, nopyc_root


def worker_config(c: dict, mode: str, imgs: list[str], plan: Plan, labels: list[str] | None) -> tuple[dict, dict]:
    """-> (the worker's JSON config, its environment) for one configuration and mode."""
    base = {"mode": mode, "images": imgs, "runs": plan.runs, "budget_s": plan.budget_s,
            "infer_runs": plan.infer_runs, "threads": c["threads"], "model": c["model"],
            "task_root": c.get("task_root"), "crop_cost": bool(c.get("crop_cost"))}
    if c["stack"] == "keras":
        base.update(keras_model=c["model"], labels=labels)
    env = worker_env(MODEL_PATH=c["model"], NUM_THREADS=c["threads"])
    if c.get("task_root"):
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(c.get("env") or {})
    return base, env


def run_cold(configs: list[dict], plan: Plan, cold_img: list[str], labels: list[str] | None) -> None:
    """Cold starts, interleaved round-robin across configurations so slow drifts in the
    background load hit every stack alike; each config gets its ``cold`` summary."""
    log(f"cold starts: {len(configs)} configurations x {plan.cold_runs} (+{plan.cold_discard} discarded)")
    cold: dict[str, list] = {c["id"]: [] for c in configs}
    rounds = plan.cold_runs + plan.cold_discard
    for r in range(rounds):
        for c in configs:
            n = plan.keras_cold_runs + plan.cold_discard if c["stack"] == "keras" else rounds
            if r >= n:
                continue
            cfg, env = worker_config(c, "cold", cold_img, plan, labels)
            res = cold_start(c["py"], c["script"], cfg, env)
            if r >= plan.cold_discard:
                cold[c["id"]].append(res)
            elif "error" in res:
                log(f"  {c['id']}: {res['error']}")
    for c in configs:
        c["cold"] = summarize_cold(cold[c["id"]])


def run_warm(configs: list[dict], plan: Plan, img_paths: list[str], labels: list[str] | None) -> None:
    log("warm latency, inference and peak RSS (one process per configuration)")
    for c in configs:
        if c.get("cold_only"):
            continue
        cfg, env = worker_config(c, "warm", img_paths, plan, labels)
        t0 = time.perf_counter()
        c["warm"] = run_worker(c["py"], c["script"], cfg, env, timeout=400)
        log(f"  {c['id']}: {time.perf_counter() - t0:.0f} s"
            + (f"  ERROR {c['warm']['error']}" if "error" in c["warm"] else ""))


def run_initparts(configs: list[dict], plan: Plan, cold_img: list[str], first_threads: int) -> dict:
    log("cold-start anatomy (fresh processes, each step timed)")
    out: dict = {}
    for c in configs:
        if c["stack"] == "keras" or c.get("cold_only") or c["threads"] != first_threads:
            continue
        cfg, env = worker_config(c, "initparts", cold_img, plan, None)
        runs = [run_worker(c["py"], c["script"], cfg, env, timeout=60) for _ in range(plan.cold_runs)]
        ok = [r["parts"] for r in runs if "parts" in r]
        if ok:
            names = [n for n, _ in ok[0]]
            out[c["id"]] = {n: percentile([dict(r)[n] for r in ok], 50) for n in names}
        else:
            out[c["id"]] = {"error": runs[0].get("error", "?")}
    return out


def side_measurements(results: dict, args: argparse.Namespace, found: dict, plan: Plan, threads: list[int],
                      ref_py: str | None, images: dict[str, Path]) -> None:
    ours_py = sys.executable
    if ref_py:
        log("reference runtime vs every variant flatbuffer (loads? inference)")
        cfg = {"mode": "variants", "models": list(found["variants"].values()), "threads": 1,
               "infer_runs": max(3, plan.infer_runs // 2), "budget_s": plan.budget_s / 2}
        results["ref_variants"] = run_worker(ref_py, "ref_worker.py", cfg, worker_env(), timeout=300)
    log("CPU peak (numpy float32 matmul)")
    results["peak"] = matmul_peak(ours_py, threads)
    log("dependency sizes")
    results["deps"] = dep_sizes(ours_py, ref_py)
    log("import-time profile")
    results["importtime"] = import_profile(ours_py, found["variants"][found["shipped_variant"]])
    if not args.no_fetch:
        log("fetch over loopback")
        results["fetch"] = fetch_bench(ours_py, ref_py, images, plan)


def write_outputs(results: dict, args: argparse.Namespace) -> None:
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = report.render(results)
    print(md)
    report_path = args.report if args.report is not None else (None if args.quick else str(BENCH / "REPORT.md"))
    if report_path and report_path != "-":
        report.write_report(Path(report_path), md)
        log(f"wrote {report_path}")
    log(f"raw results: {json_path}; total {results['meta']['duration_s']:.0f} s")


def stacks(args: argparse.Namespace, found: dict) -> tuple[str | None, str, str | None, str]:
    """-> (reference Python, its status, Keras Python, its status)."""
    ref_py, ref_status = (None, "skipped (--no-reference)")
    if not args.no_reference:
        ref_py, ref_status = ensure_ref_venv(args.ref_python, REF_VENV, log)
        log(f"reference venv: {ref_status}")
    keras_py = None if args.no_keras else find_keras_python(args.keras_python)
    keras_status = "skipped (--no-keras)" if args.no_keras else (
        "no Python with TensorFlow found" if not keras_py else
        ("no Keras model found" if not found["keras_model"] else f"{keras_py}"))
    return ref_py, ref_status, keras_py, keras_status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan(args.quick, args.repeat)
    t_start = time.perf_counter()
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if args.quick:
        threads = threads[:1]
        if args.variants == ",".join(VARIANTS):
            args.variants = "float32"
    found = resolve_models(args)
    for m in found["missing"]:
        log(f"missing: {m}")
    for n in found["notes"]:
        log(n)
    if not found["variants"]:
        log("nothing to benchmark")
        return 2
    images = ensure_images()
    img_paths = [str(images[n]) for n in IMAGE_NAMES]
    cold_img = [str(images["photo-300.jpg"])]
    ref_py, ref_status, keras_py, keras_status = stacks(args, found)

    results: dict = {"meta": {"args": vars(args), "quick": args.quick, "threads": threads,
                              "ref_status": ref_status, "keras_status": keras_status, **found},
                     "machine": machine_info(sys.executable, ref_py, keras_py), "configs": []}
    log(f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
        f"load {results['machine']['loadavg_start'][0]:.2f}")
    log("model facts (size, sha256, FLOPs)")
    results["models"] = {v: model_facts(p) for v, p in found["variants"].items()}
    results["accuracy"] = accuracy_table(Path(args.variants_dir))
    labels = next((m["outputs"] for m in results["models"].values() if m.get("outputs")), None)  # Keras row

    configs, nopyc_root = build_configs(found, threads, sys.executable, ref_py, keras_py)
    try:
        run_cold(configs, plan, cold_img, labels)
    finally:
        if nopyc_root is not None:
            shutil.rmtree(nopyc_root, ignore_errors=True)
    run_warm(configs, plan, img_paths, labels)
    results["configs"] = [{k: v for k, v in c.items() if k != "py"} for c in configs]
    results["initparts"] = run_initparts(configs, plan, cold_img, threads[0])
    side_measurements(results, args, found, plan, threads, ref_py, images)
    results["meta"]["duration_s"] = time.perf_counter() - t_start
    write_outputs(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
