"""A local stand-in for ``public.ecr.aws/lambda/python:3.12``, built with buildah.

Why: this machine (and CI) has no Docker engine and reaches no container registry, yet
the real Dockerfile must be built and run. The stand-in mirrors what the Dockerfile and
the image's users rely on in AWS's base image:

* Python 3.12 in ``/var/lang`` (``LD_LIBRARY_PATH`` includes ``/var/lang/lib``, as on AWS)
  with a current pip, so the cp312 wheels pinned in ``Pipfile.lock`` install unchanged;
* the runtime interface client (``awslambdaric``) in ``/var/runtime`` + ``/var/runtime/bootstrap``;
* the runtime interface emulator at ``/usr/local/bin/aws-lambda-rie`` (the binary AWS SAM
  CLI ships in its wheel) and ``/lambda-entrypoint.sh`` with AWS's contract;
* ``ENTRYPOINT ["/lambda-entrypoint.sh"]``, ``WORKDIR /var/task``, ``LAMBDA_TASK_ROOT``.

The Python is the host's own CPython 3.12 (``sys.base_prefix`` of the interpreter running
this, pyenv's build here) copied onto a Debian bookworm rootfs made by debootstrap: the
same minor version as the Lambda base (Debian's own python is 3.11 in bookworm and 3.13
in trixie, either would install different wheels), and bookworm carries exactly the shared
libraries that build links against (libssl3, libffi8, libsqlite3, ...).

For ``linux/arm64`` on an x86 machine (``ensure_standin(arch="arm64")``) the same layout is
built from Debian trixie's arm64 packages, run through ``qemu-user-static`` via binfmt_misc:
nothing reachable from here ships an aarch64 CPython 3.12 (Debian has 3.11 and 3.13, PyPI and
npm only launchers that download from elsewhere), so that stand-in's ``/var/lang/bin/python3``
is Debian's CPython 3.13 and the Dockerfile installs the cp313 aarch64 wheels of the same
pinned versions (the lock holds the hashes of every file of each release). For LiteRT that is
the same native code: ``libLiteRt.so`` is byte-identical in the cp312 and cp313 aarch64 wheels
of ai-edge-litert 2.3.0, and ``libpywrap_litert_common.so`` differs only in its Python glue.

Everything is cached (rootfs under the cache dir, the image in a private buildah store)
and keyed on the recipe, so only the first run pays for debootstrap.
Run by hand: ``python -m tests.imagebuild.standin`` prints the image name.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
IMAGE_REPO = "localhost/yogapose-lambda-standin"
SUITE = "bookworm"
MIRROR = os.environ.get("STANDIN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Shared libraries the CPython build and the manylinux wheels link against, plus the CA
# store (pip verifies TLS against it; the build mounts the host's bundle over it).
DEB_PACKAGES = (
    "ca-certificates", "libssl3", "libffi8", "libsqlite3-0", "libbz2-1.0", "liblzma5",
    "zlib1g", "libncursesw6", "libreadline8", "libexpat1", "libtirpc3", "libuuid1",
    "libstdc++6", "libgcc-s1",
)  # fmt: skip
# Hash-pinned tools for the stand-in that are not part of the project's lock.
TOOLS_FILE = HERE / "standin-tools.txt"
# awslambdaric (and what it needs) comes from the dev group of Pipfile.lock.
RIC_PACKAGES = ("awslambdaric", "simplejson", "snapshot-restore-py")
RIE_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
# OCI architecture name -> uname machine name.
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


@dataclass(frozen=True)
class Foreign:
    """A stand-in for another CPU architecture, from Debian's packages, run under qemu."""

    arch: str  # OCI name: arm64
    suite: str
    python: str  # Debian's CPython minor version in that suite
    packages: tuple[str, ...]

    @property
    def machine(self) -> str:
        return MACHINES[self.arch]


FOREIGN = {
    "arm64": Foreign("arm64", "trixie", "3.13",
                     ("ca-certificates", "python3.13", "libstdc++6", "libgcc-s1")),
}  # fmt: skip
IMAGE_ENV = {
    "LANG": "C.UTF-8",
    "TZ": ":/etc/localtime",
    "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
    "LD_LIBRARY_PATH": "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib"
    ":/var/task:/var/task/lib:/opt/lib",
    "LAMBDA_TASK_ROOT": "/var/task",
    "LAMBDA_RUNTIME_DIR": "/var/runtime",
}


def log(msg: str) -> None:
    print(f"[standin] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """Outside the work tree, so CI's fresh clones on the same machine reuse it."""
    path = Path(os.environ.get("YOGAPOSE_IMAGEBUILD_CACHE", "/var/tmp/yogapose-imagebuild"))
    path.mkdir(parents=True, exist_ok=True)
    return path


class Buildah:
    """buildah with a private vfs store: works without overlayfs, fuse or a daemon."""

    def __init__(self, root: Path | None = None) -> None:
        base = root or cache_dir()
        self.args = [
            "buildah",
            "--root", str(base / "storage"),
            "--runroot", str(base / "run"),
            "--storage-driver", "vfs",
        ]  # fmt: skip

    def __call__(self, *args: str, capture: bool = True, **kw) -> str:
        proc = subprocess.run(
            [*self.args, *args],
            check=False,
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            **kw,
        )
        if proc.returncode != 0:
            detail = (proc.stderr or "")[-4000:] if capture else ""
            raise RuntimeError(f"buildah {' '.join(args[:3])} ... failed ({proc.returncode}): {detail}")
        return (proc.stdout or "").strip()

    def image_exists(self, name: str) -> bool:
        return subprocess.run([*self.args, "inspect", "--type", "image", name],
                              capture_output=True, check=False).returncode == 0  # fmt: skip

    def image_size(self, name: str) -> int:
        """Bytes of all layers of ``name`` (uncompressed, as stored)."""
        images = json.loads(self("images", "--json", name))
        return int(images[0]["size"])


def _lock_requirements(names: tuple[str, ...], group: str = "develop") -> str:
    lock = json.loads((REPO / "Pipfile.lock").read_text())[group]
    lines = []
    for name in names:
        pkg = lock[name]
        hashes = " ".join(f"--hash={h}" for h in pkg["hashes"])
        lines.append(f"{name}{pkg['version']} {hashes}")
    return "\n".join(lines) + "\n"


def _recipe_hash(interpreter: str) -> str:
    """Changes whenever anything that goes into a stand-in changes (``interpreter`` names its Python)."""
    h = hashlib.sha256()
    for path in (Path(__file__), HERE / "lambda-entrypoint.sh", HERE / "bootstrap", TOOLS_FILE):
        h.update(path.read_bytes())
    h.update(_lock_requirements(RIC_PACKAGES).encode())
    h.update(interpreter.encode())
    return h.hexdigest()[:16]


def recipe_key() -> str:
    """The host stand-in's key: this interpreter's build is part of the recipe."""
    return _recipe_hash(f"{sys.version}|{sys.base_prefix}|{platform.machine()}")


def _tool_pin(prefix: str) -> str:
    """The hash-pinned requirement line of one stand-in tool."""
    return next(line for line in TOOLS_FILE.read_text().splitlines() if line.startswith(prefix))


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], check=True)


def ensure_rootfs(cache: Path, suite: str = SUITE, packages: tuple[str, ...] = DEB_PACKAGES,
                  arch: str | None = None) -> Path:  # fmt: skip
    """A trimmed Debian rootfs; built once by debootstrap, then reused (about a minute).

    ``arch`` (an OCI/Debian name such as ``arm64``) builds a foreign one; debootstrap's second
    stage then runs the foreign dpkg through qemu (binfmt_misc), ~4-6 min on two cores.
    """
    recipe = f"{suite}|{MIRROR}|{','.join(packages)}" + (f"|{arch}" if arch else "")
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    target = cache / f"rootfs-{suite}-{arch + '-' if arch else ''}{key}.tar"
    if target.exists():
        return target
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(dir=cache, prefix="debootstrap-") as tmp:
        root = Path(tmp) / "rootfs"
        log(f"debootstrap {suite} {arch or ''} (first run only)")
        subprocess.run(
            ["debootstrap", "--variant=minbase", *([f"--arch={arch}"] if arch else []),
             f"--include={','.join(packages)}", suite, str(root), MIRROR],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        # What a container base image does not need: package caches, indexes, docs.
        for rel in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                    "usr/share/locale", "usr/share/info"):  # fmt: skip
            shutil.rmtree(root / rel, ignore_errors=True)
        partial = target.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
        partial.rename(target)
    return target


def ensure_rie(cache: Path, machine: str | None = None) -> Path:
    """The emulator binary from AWS SAM CLI's wheel (hash-pinned in standin-tools.txt)."""
    arch = RIE_ARCH[machine or platform.machine()]
    pin = _tool_pin("aws-sam-cli")
    version = pin.split("==")[1].split()[0]
    binary = cache / f"aws-lambda-rie-{arch}-{version}"
    if binary.exists():
        return binary
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        req = Path(tmp) / "req.txt"
        req.write_text(pin + "\n")
        _pip("download", "-q", "--no-deps", "--require-hashes", "-d", tmp, "-r", str(req))
        (wheel,) = Path(tmp).glob("aws_sam_cli-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(f"samcli/local/rapid/aws-lambda-rie-{arch}")
    partial = binary.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.rename(binary)
    return binary


def _copy_python(dest: Path) -> None:
    """This interpreter's installation -> /var/lang, minus its test suite and site-packages."""
    src = Path(sys.base_prefix)
    site = Path("lib") / f"python{sys.version_info.major}.{sys.version_info.minor}"

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        rel = Path(info.name)
        if rel.is_relative_to(site / "test") or (
            rel.is_relative_to(site / "site-packages") and rel != site / "site-packages"
        ):
            return None
        # pyenv's console scripts carry the host prefix in their shebang; python3 -m pip works.
        if rel.parent == Path("bin") and not rel.name.startswith("python"):
            return None
        return info

    with tempfile.TemporaryFile() as buf:
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(src, arcname=".", filter=keep)
        buf.seek(0)
        with tarfile.open(fileobj=buf, mode="r") as tar:
            tar.extractall(dest, filter="tar")


def _install_host_python(mnt: Path) -> None:
    """This interpreter in /var/lang with the pinned pip; the runtime client in /var/runtime."""
    lang = mnt / "var" / "lang"
    lang.mkdir(parents=True)
    _copy_python(lang)
    site = lang / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    with tempfile.TemporaryDirectory() as tmp:
        for target, requirements in ((site, _tool_pin("pip==") + "\n"),
                                     (mnt / "var" / "runtime", _lock_requirements(RIC_PACKAGES))):  # fmt: skip
            req = Path(tmp) / "req.txt"
            req.write_text(requirements)
            _pip("install", "-q", "--no-cache-dir", "--no-deps", "--require-hashes",
                 "--only-binary=:all:", "--target", str(target), "-r", str(req))  # fmt: skip
    shutil.rmtree(site / "bin", ignore_errors=True)


def _assemble(buildah: Buildah, image: str, rootfs_tar: Path, rie: Path, arch: str | None,
              machine: str, install: Callable[[Path], None]) -> None:  # fmt: skip
    """Commit ``image``: the rootfs, what ``install`` puts into it, and AWS's runtime layout.

    Shared by the host and the foreign stand-ins. ``install(mnt)`` provides
    ``/var/lang/bin/python3`` with pip and the runtime client in ``/var/runtime``; ``arch``
    None builds for this machine. The commit happens only after a smoke check inside the image
    (emulated for a foreign one) that the interpreter, its C extensions, pip and the runtime
    client load on ``machine``.
    """
    ctr = buildah("from", "--quiet", *(["--arch", arch] if arch else []), "scratch")
    try:
        mnt = Path(buildah("mount", ctr))
        subprocess.run(["tar", "-C", str(mnt), "-xf", str(rootfs_tar)], check=True)
        install(mnt)
        runtime = mnt / "var" / "runtime"
        shutil.rmtree(runtime / "bin", ignore_errors=True)
        shutil.copy2(HERE / "bootstrap", runtime / "bootstrap")
        shutil.copy2(HERE / "lambda-entrypoint.sh", mnt / "lambda-entrypoint.sh")
        (mnt / "usr" / "local" / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(rie, mnt / "usr" / "local" / "bin" / "aws-lambda-rie")
        for rel in ("var/task", "opt"):
            (mnt / rel).mkdir(parents=True, exist_ok=True)
        buildah("umount", ctr)
        config = ["config", "--entrypoint", '["/lambda-entrypoint.sh"]', "--workingdir", "/var/task",
                  "--cmd", "", "--os", "linux", "--arch", arch or platform.machine()]  # fmt: skip
        for key, value in IMAGE_ENV.items():
            config += ["--env", f"{key}={value}"]
        buildah(*config, ctr)
        buildah("run", "--isolation", "chroot", ctr, "--", "/var/lang/bin/python3", "-c",
                "import ssl, ctypes, sqlite3, lzma, bz2, zlib, pip, sys, platform; "
                f"assert platform.machine() == {machine!r}, platform.machine(); "
                "sys.path.insert(0, '/var/runtime'); import awslambdaric")  # fmt: skip
        buildah("commit", "--quiet", "--rm", ctr, image)
        ctr = ""
    finally:
        if ctr:
            subprocess.run([*buildah.args, "rm", ctr], capture_output=True, check=False)


def ensure_standin(buildah: Buildah | None = None) -> str:
    """Return the name of the stand-in base image, building it if needed (~2-3 min first time)."""
    if sys.version_info[:2] != (3, 12):
        raise RuntimeError(f"the stand-in copies this interpreter; need Python 3.12, got {sys.version}")
    buildah = buildah or Buildah()
    image = f"{IMAGE_REPO}:{recipe_key()}"
    if buildah.image_exists(image):
        return image
    cache = cache_dir()
    rootfs_tar = ensure_rootfs(cache)
    rie = ensure_rie(cache)
    log(f"assembling {image}")
    _assemble(buildah, image, rootfs_tar, rie, None, platform.machine(), _install_host_python)
    _prune_old(buildah, image, IMAGE_REPO)
    return image


def _prune_old(buildah: Buildah, keep: str, repo: str) -> None:
    """Drop stand-ins from older recipes: vfs stores every layer as a full copy."""
    for line in buildah("images", "--format", "{{.Name}}:{{.Tag}}", "--filter",
                        f"reference={repo}").splitlines():  # fmt: skip
        if line and line != keep:
            subprocess.run([*buildah.args, "rmi", "-f", line], capture_output=True, check=False)


BINFMT = Path("/proc/sys/fs/binfmt_misc")


def foreign_problem(arch: str) -> str | None:
    """None when this machine can build and run ``arch`` images, else why not.

    Foreign binaries run through qemu-user-static registered in binfmt_misc with the F flag
    (the kernel opens the emulator at registration, so it works inside a chroot). As root this
    mounts binfmt_misc and enables Debian's qemu entry when they are not yet active.
    """
    foreign = FOREIGN.get(arch)
    if foreign is None:
        return f"no stand-in recipe for {arch}"
    qemu = f"qemu-{foreign.machine}"
    if shutil.which(f"{qemu}-static") is None:
        return f"{qemu}-static is not installed (apt-get install qemu-user-static binfmt-support)"
    entry = BINFMT / qemu
    if not entry.exists() and os.geteuid() == 0:
        if not (BINFMT / "register").exists():
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
                           capture_output=True, check=False)  # fmt: skip
        if shutil.which("update-binfmts"):
            subprocess.run(["update-binfmts", "--enable", qemu], capture_output=True, check=False)
    if not entry.exists():
        return f"binfmt_misc has no {qemu} entry (mount binfmt_misc; update-binfmts --enable {qemu})"
    lines = entry.read_text().splitlines()
    if lines[0] != "enabled":
        return f"binfmt_misc entry {qemu} is disabled (update-binfmts --enable {qemu})"
    flags = next((line.split(":", 1)[1] for line in lines if line.startswith("flags:")), "")
    if "F" not in flags:
        return f"binfmt_misc entry {qemu} lacks the F flag, so it cannot run inside a chroot"
    return None


def _pip_for(foreign: Foreign, target: Path, requirements: str) -> None:
    """Host pip installs wheels for the foreign interpreter (no emulation needed)."""
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "req.txt"
        req.write_text(requirements)
        tags = [f"manylinux_2_{n}_{foreign.machine}" for n in (17, 28, 34)]
        _pip("install", "-q", "--no-cache-dir", "--no-deps", "--require-hashes", "--no-compile",
             "--only-binary=:all:", *[f"--platform={t}" for t in tags],
             f"--python-version={foreign.python}", "--implementation=cp",
             f"--abi=cp{foreign.python.replace('.', '')}", "--target", str(target), "-r", str(req))  # fmt: skip


SHIM_REQUIREMENTS = REPO / "shim" / "requirements.txt"
# Where the foreign build finds its wheels (see ``foreign_build_volumes``).
WHEELHOUSE = "/var/cache/yogapose-wheelhouse"


def _runtime_requirements() -> str:
    """The lock's default group as pip requirement lines, as the Dockerfile's deps stage writes them."""
    lock = json.loads((REPO / "Pipfile.lock").read_text())["default"]
    lines = []
    for name, pkg in sorted(lock.items()):
        extras = f"[{','.join(pkg['extras'])}]" if pkg.get("extras") else ""
        markers = f" ; {pkg['markers']}" if pkg.get("markers") else ""
        lines.append(f"{name}{extras}{pkg['version']}{markers} " + " ".join(f"--hash={h}" for h in pkg["hashes"]))
    return "\n".join(lines) + "\n"


def foreign_build_volumes(arch: str) -> list[str]:
    """``--volume`` arguments that serve the deps stage's ``pip install`` from a local wheelhouse.

    Under emulation pip spends 15+ minutes fetching and parsing the package index pages (those
    of botocore alone list thousands of files) before it installs 54 MB of wheels. So the host's
    pip downloads the very files (hash-checked against Pipfile.lock, for the foreign platform)
    once into the cache, and the RUN step sees them read-only through a pip.conf with
    ``no-index``: the Dockerfile is unchanged and its emulated pip still selects, hash-checks,
    unpacks and byte-compiles every wheel itself (~40 s). Nothing of it lands in a layer.
    """
    from localtools import assets  # what the deps stage's assets.py downloads

    foreign = FOREIGN[arch]
    # Every pip call of the build: the lock's runtime group and the shim's compiler (for the
    # foreign platform), and the wheel the person detector is extracted from (as assets.py asks).
    requirements = _runtime_requirements() + SHIM_REQUIREMENTS.read_text()
    detector_wheel = ["--platform", assets.PLATFORM, "--python-version", assets.PYTHON_VERSION, assets.WHEEL]
    key = hashlib.sha256(f"{requirements}|{foreign!r}|{detector_wheel}".encode()).hexdigest()[:12]
    wheels = cache_dir() / f"wheelhouse-{arch}-{key}"
    if not wheels.exists():
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            req = Path(tmp) / "requirements.txt"
            req.write_text(requirements)
            out = str(Path(tmp) / "wheels")
            tags = [f"manylinux_2_{n}_{foreign.machine}" for n in (17, 27, 28, 34)]
            _pip("download", "-q", "--no-deps", "--require-hashes", "--only-binary=:all:",
                 *[f"--platform={t}" for t in tags], f"--python-version={foreign.python}",
                 "--implementation=cp", f"--abi=cp{foreign.python.replace('.', '')}",
                 "-d", out, "-r", str(req))  # fmt: skip
            _pip("download", "-q", "--no-deps", "--only-binary=:all:", "-d", out, *detector_wheel)
            Path(out).rename(wheels)
        for old in cache_dir().glob(f"wheelhouse-{arch}-*"):
            if old != wheels:
                shutil.rmtree(old, ignore_errors=True)
    conf = cache_dir() / f"pip-wheelhouse-{arch}.conf"
    conf.write_text(f"[global]\nno-index = true\nfind-links = {WHEELHOUSE}\n")
    return ["--volume", f"{wheels}:{WHEELHOUSE}:ro", "--volume", f"{conf}:/etc/pip.conf:ro"]


def _install_debian_python(foreign: Foreign, mnt: Path) -> None:
    """Debian's interpreter at /var/lang/bin/python3 (where AWS's base keeps its own), the pinned
    pip in its dist-packages and the runtime client in /var/runtime, all installed by host pip."""
    bindir = mnt / "var" / "lang" / "bin"
    bindir.mkdir(parents=True)
    for name in ("python3", f"python{foreign.python}"):
        (bindir / name).symlink_to(f"/usr/bin/python{foreign.python}")
    (mnt / "var" / "lang" / "lib").mkdir()
    site = mnt / "usr" / "local" / "lib" / f"python{foreign.python}" / "dist-packages"
    _pip_for(foreign, site, _tool_pin("pip==") + "\n")
    _pip_for(foreign, mnt / "var" / "runtime", _lock_requirements(RIC_PACKAGES))


def ensure_foreign_standin(buildah: Buildah, arch: str) -> str:
    """The stand-in for ``arch`` (see the module docstring), built once (~6-8 min) and cached."""
    foreign = FOREIGN[arch]
    problem = foreign_problem(arch)
    if problem:
        raise RuntimeError(problem)
    repo = f"{IMAGE_REPO}-{arch}"
    image = f"{repo}:{_recipe_hash(repr(foreign))}"
    if buildah.image_exists(image):
        return image
    cache = cache_dir()
    rootfs_tar = ensure_rootfs(cache, foreign.suite, foreign.packages, arch)
    rie = ensure_rie(cache, foreign.machine)
    log(f"assembling {image}")
    _assemble(buildah, image, rootfs_tar, rie, arch, foreign.machine, partial(_install_debian_python, foreign))
    _prune_old(buildah, image, repo)
    return image


if __name__ == "__main__":
    print(ensure_foreign_standin(Buildah(), sys.argv[1]) if len(sys.argv) > 1 else ensure_standin())
