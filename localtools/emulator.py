"""Run the function locally behind the real AWS Lambda Runtime Interface Emulator (RIE).

No Docker needed: the RIE binary ships inside the ``aws-sam-cli`` wheel
(``samcli/local/rapid/aws-lambda-rie-<arch>``). It is fetched once with pip from the
package registry, extracted into a cache (``.tools/`` in the repository, else
``$XDG_CACHE_HOME/yogapose``) and started as::

    aws-lambda-rie --log-level info \\
        --runtime-interface-emulator-address 127.0.0.1:8080 \\
        --runtime-api-address 127.0.0.1:<free port> \\
        <python> -m awslambdaric lambda_function.lambda_handler

in the repository root, exactly what the Lambda base image's entrypoint does outside AWS.
The RIE sets ``AWS_LAMBDA_RUNTIME_API`` for the runtime itself and passes the rest of the
environment (MODEL_PATH, ALLOW_PRIVATE_URLS, ...) through. Invoke it like ``docker run``::

    curl -s localhost:8080/2015-03-31/functions/function/invocations -d '{"url": "https://..."}'

It listens on 127.0.0.1 only: the invoke API has no authentication.
"""

from __future__ import annotations

import os
import platform
import socket
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from yogapose.deadline import FUNCTION_TIMEOUT_S

# The wheel the RIE binary comes from; bump together with the README.
SAM_CLI_VERSION = "1.170.0"
HANDLER = "lambda_function.lambda_handler"
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
REPO_ROOT = Path(__file__).resolve().parent.parent


def rie_arch(machine: str | None = None) -> str:
    """``x86_64`` or ``arm64``, the suffixes of the binaries in the wheel."""
    m = (machine or platform.machine()).lower()
    if m in ("x86_64", "amd64"):
        return "x86_64"
    if m in ("aarch64", "arm64"):
        return "arm64"
    raise RuntimeError(f"the Lambda RIE is only built for x86_64 and arm64, not {m!r}")


def cache_dir() -> Path:
    """``YOGAPOSE_TOOLS_DIR``, else ``<repo>/.tools`` when writable, else the XDG cache."""
    explicit = os.environ.get("YOGAPOSE_TOOLS_DIR")
    if explicit:
        return Path(explicit)
    if (REPO_ROOT / "lambda_function.py").exists() and os.access(REPO_ROOT, os.W_OK):
        return REPO_ROOT / ".tools"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "yogapose"


def ensure_rie(cache: Path | None = None, version: str = SAM_CLI_VERSION) -> Path:
    """Path of an executable RIE binary, downloading the aws-sam-cli wheel on first use."""
    arch = rie_arch()
    cache = cache or cache_dir()
    target = cache / f"aws-lambda-rie-{arch}-sam{version}"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    member = f"samcli/local/rapid/aws-lambda-rie-{arch}"
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", f"aws-sam-cli=={version}", "-d", tmp]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("aws_sam_cli-*.whl"))
        if done.returncode != 0 or not wheels:
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise RuntimeError(f"could not download aws-sam-cli=={version} with pip: {detail[0]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                data = wheel.read(member)
            except KeyError:
                raise RuntimeError(f"{wheels[0].name} has no {member}") from None
        partial = Path(tmp) / target.name
        partial.write_bytes(data)
        partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.replace(partial, target)  # atomic: a concurrent caller never sees half a binary
    return target


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def command(port: int = 8080, *, rie: Path | None = None, runtime_api_port: int | None = None,
            log_level: str = "info", handler: str = HANDLER, python: str | None = None) -> list[str]:
    """The RIE command line; the runtime API gets its own free port (9001 may be taken)."""
    api_port = runtime_api_port or free_port()
    return [
        str(rie or ensure_rie()),
        "--log-level", log_level,
        "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
        "--runtime-api-address", f"127.0.0.1:{api_port}",
        python or sys.executable, "-m", "awslambdaric", handler,
    ]


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.setdefault("LAMBDA_TASK_ROOT", str(REPO_ROOT))
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The template's Timeout, so a local request gets the budget it gets on Lambda.
    env.setdefault("AWS_LAMBDA_FUNCTION_TIMEOUT", str(int(FUNCTION_TIMEOUT_S)))
    return env


def start(port: int = 8080, *, env: dict[str, str] | None = None, log_level: str = "info",
          **popen_kwargs: Any) -> subprocess.Popen:
    """Start the emulator in the background (own process group, cwd = repository root)."""
    return subprocess.Popen(
        command(port, log_level=log_level), cwd=REPO_ROOT, env=environment(env),
        start_new_session=True, **popen_kwargs,
    )


def run(port: int = 8080, log_level: str = "info") -> None:
    """Replace this process with the emulator (Ctrl+C / SIGTERM reach the RIE directly)."""
    cmd = command(port, log_level=log_level)
    print(f"Lambda RIE on http://127.0.0.1:{port}{INVOKE_PATH} (Ctrl+C stops)", file=sys.stderr, flush=True)
    os.chdir(REPO_ROOT)
    os.execve(cmd[0], cmd, environment())
