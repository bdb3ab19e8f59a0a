"""Build the project's Dockerfile with buildah and run the result like ``docker run``.

``build_image`` is ``docker build --build-arg BASE_IMAGE=<stand-in> .`` (chroot isolation,
vfs storage: no daemon, no overlayfs, no user namespaces needed). ``RunningFunction``
starts the built image's ENTRYPOINT + CMD in its root filesystem with ``buildah run``,
which shares the host network, so the emulator's HTTP API is on a loopback port.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from tests.imagebuild.standin import REPO, Buildah

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
# What the Dockerfile needs from the work tree; a temp context holds just these.
CONTEXT_ITEMS = ("Dockerfile", ".dockerignore", "Pipfile", "Pipfile.lock", "lambda_function.py",
                 "yogapose", "model")  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_context(dest: Path, model_files: list[Path] | None = None) -> Path:
    """A copy of the build context; ``model_files`` replace model/ (for a stand-in model)."""
    dest.mkdir(parents=True)
    for name in CONTEXT_ITEMS:
        src = REPO / name
        if name == "model" and model_files is not None:
            (dest / "model").mkdir(parents=True)
            for path in model_files:
                shutil.copy2(path, dest / "model" / path.name)
        elif src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


@dataclass
class BuiltImage:
    name: str
    base: str
    seconds: float
    layers: list[int]  # uncompressed bytes of each layer, base layers first
    base_layers: int

    @property
    def added_bytes(self) -> int:
        return sum(self.layers[self.base_layers :])


def _layer_sizes(buildah: Buildah, image: str) -> list[int]:
    info = json.loads(buildah("inspect", "--type", "image", image))
    manifest = json.loads(info["Manifest"])
    return [int(layer["size"]) for layer in manifest["layers"]]


def build_image(buildah: Buildah, context: Path, base: str, tag: str, log: Path,
                arch: str | None = None, volumes: list[str] = ()) -> BuiltImage:  # fmt: skip
    """``docker build`` of ``context/Dockerfile`` on ``base``; build output goes to ``log``.

    ``arch`` is ``docker build --platform linux/<arch>``: every RUN step then executes the
    foreign binaries through qemu (binfmt_misc), like Docker's own cross builds.
    """
    cmd = [*buildah.args, "bud", "--isolation", "chroot", "--layers",
           "--build-arg", f"BASE_IMAGE={base}", "-t", tag, "-f", "Dockerfile"]  # fmt: skip
    if arch:
        cmd += ["--arch", arch, "--os", "linux"]
    cmd += list(volumes)
    if HOST_CA_BUNDLE.exists():
        # This machine reaches PyPI through a TLS-inspecting proxy: lend its CA bundle to the
        # RUN steps, read-only and only while they run. It never lands in a layer, and the
        # Dockerfile stays the one users build with plain `docker build`.
        cmd += ["--volume", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro"]
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run([*cmd, "."], cwd=context, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"buildah bud failed ({proc.returncode}):\n{log.read_text()[-6000:]}")
    return BuiltImage(tag, base, seconds, _layer_sizes(buildah, tag), len(_layer_sizes(buildah, base)))


# A build step's result in buildah's output: "--> Using cache <id>" and/or "--> <short id>".
_STEP_RESULT = re.compile(r"^--> (?:Using cache )?([0-9a-f]{11,64})\s*$", re.MULTILINE)


def images_of_build(log: Path) -> set[str]:
    """IDs (full or abbreviated) of every step image a build made or took from its cache."""
    return set(_STEP_RESULT.findall(log.read_text(errors="replace")))


def keep_only_build_cache(buildah: Buildah, used: set[str]) -> None:
    """Remove the untagged images the last build neither made nor reused.

    vfs keeps a full copy per image, so a kept build cache must be bounded; pruning every
    untagged image would drop the steps the next build reuses too, and that emulated build
    would run pip and zig under qemu again (~9 min instead of ~1.5). Dropping only what the
    last build did not use keeps exactly one build's cache.
    """
    for image in json.loads(buildah("images", "--all", "--json") or "[]"):
        if image.get("names") or any(image["id"].startswith(u) for u in used):
            continue
        # Fails, harmlessly, for an image that is still the parent of a kept one.
        subprocess.run([*buildah.args, "rmi", image["id"]], capture_output=True, check=False)


def remove_image(buildah: Buildah, tag: str) -> None:
    """Drop the test image and the build's intermediate layers (vfs keeps full copies)."""
    subprocess.run([*buildah.args, "rmi", "-f", tag], capture_output=True, check=False)
    subprocess.run([*buildah.args, "rmi", "--prune"], capture_output=True, check=False)


class Rootfs:
    """The image's root filesystem, mounted read-only-by-convention for inspection."""

    def __init__(self, buildah: Buildah, image: str) -> None:
        self.buildah, self.image = buildah, image

    def __enter__(self) -> Path:
        self.ctr = self.buildah("from", "--quiet", "--pull=never", self.image)
        return Path(self.buildah("mount", self.ctr))

    def __exit__(self, *exc) -> None:
        subprocess.run([*self.buildah.args, "rm", self.ctr], capture_output=True, check=False)


# Lambda (arm64 in particular) does not mount /sys/devices/system/cpu: an empty tmpfs over
# it, in the container's own mount namespace, gives the function the same view.
HIDE_CPU_DIR = ["/bin/sh", "-c", 'mount -t tmpfs -o size=4k,mode=0755 no-cpu-dir /sys/devices/system/cpu'
                ' && exec "$@"', "hide-cpu-dir"]  # fmt: skip


def run_command(buildah: Buildah, ctr: str, command: list[str], hide_cpu_dir: bool = False,
                env: dict[str, str] | None = None) -> list[str]:  # fmt: skip
    """The ``buildah run`` command line for ``command`` in the container ``ctr``.

    ``hide_cpu_dir`` runs it as Lambda would see the machine: no /sys/devices/system/cpu.
    """
    cmd = [*buildah.args, "run", "--isolation", "chroot"]
    if hide_cpu_dir:
        # Mounting needs CAP_SYS_ADMIN; the mount stays in the container's namespace.
        cmd += ["--cap-add", "CAP_SYS_ADMIN"]
        command = [*HIDE_CPU_DIR, *command]
    for key, value in (env or {}).items():
        cmd += ["--env", f"{key}={value}"]
    return [*cmd, ctr, "--", *command]


def run_in_image(buildah: Buildah, image: str, command: list[str], hide_cpu_dir: bool = False,
                 timeout: float = 600) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``docker run --rm <image> command``: its output, in a container removed afterwards."""
    ctr = buildah("from", "--quiet", "--pull=never", image)
    try:
        return subprocess.run(run_command(buildah, ctr, command, hide_cpu_dir), capture_output=True,
                              text=True, timeout=timeout, check=False)  # fmt: skip
    finally:
        subprocess.run([*buildah.args, "rm", ctr], capture_output=True, check=False)


class RunningFunction:
    """``docker run -p PORT:8080 <image>``: the image's ENTRYPOINT + CMD under buildah run.

    ``hide_cpu_dir`` runs it as Lambda would see the machine: no /sys/devices/system/cpu.
    """

    def __init__(self, buildah: Buildah, image: str, env: dict[str, str], log: Path,
                 hide_cpu_dir: bool = False, start_timeout: float = 30) -> None:  # fmt: skip
        self.buildah, self.image, self.env, self.log = buildah, image, env, log
        self.hide_cpu_dir, self.start_timeout = hide_cpu_dir, start_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{INVOKE_PATH}"

    def __enter__(self) -> Self:
        config = json.loads(self.buildah("inspect", "--type", "image", self.image))["OCIv1"]["config"]
        self.command = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
        self.ctr = self.buildah("from", "--quiet", "--pull=never", self.image)
        env = dict(self.env)
        env["STANDIN_RIE_ARGS"] = (
            f"--runtime-interface-emulator-address 127.0.0.1:{self.port} "
            f"--runtime-api-address 127.0.0.1:{free_port()}"
        )
        cmd = run_command(self.buildah, self.ctr, self.command, self.hide_cpu_dir, env)
        self._out = self.log.open("w")
        # Own process group: teardown signals exactly this tree (buildah, the emulator, python).
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_listening(timeout=self.start_timeout)
        return self

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"container exited ({self.proc.returncode}):\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"emulator did not listen on {self.port}:\n{self.output()}")

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text()[-6000:]

    def __exit__(self, *exc) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        finally:
            self._out.close()
            subprocess.run([*self.buildah.args, "rm", self.ctr], capture_output=True, check=False)
