"""The real Dockerfile built for ``linux/arm64`` and run the way Lambda arm64 runs it.

``docker build --platform linux/arm64`` + ``docker run`` without Docker or an arm64 machine:
buildah builds ``Dockerfile`` with ``--arch arm64`` on the arm64 stand-in base
(tests/imagebuild/standin.py: Debian trixie arm64 with its CPython 3.13, since no aarch64
CPython 3.12 is reachable from here), and every RUN step and the function itself execute
through qemu-user-static (binfmt_misc). The function runs with ``/sys/devices/system/cpu``
hidden, as on Lambda arm64, where the CPU-detection library inside XNNPACK reads the CPU
count from there, and must classify a real validation photo correctly with the shipped model.

Needs root, buildah, debootstrap and qemu-user-static with binfmt_misc (``.ci/run`` installs
them; this test mounts binfmt_misc and enables the qemu entry when it can); skips with the
reason otherwise, unless REQUIRE_IMAGE_TEST=1 (set by CI), which turns that skip into a failure.
The build's pip is served from a wheelhouse that the host's pip downloads (standin.
foreign_build_volumes says why). On a busy two-core machine: arm64 debootstrap ~7.5 min (first
run only; the stand-in base is cached like the x86 one), emulated build ~8 min, run ~1 min;
a rerun with the same lock, shim and stand-in reuses the build's cached layers.
"""

from __future__ import annotations

import json

import pytest

from tests.imagebuild import harness, standin
from tests.imagebuild import image as img

pytestmark = pytest.mark.timeout(1800)

REPO = standin.REPO
ARCH = "arm64"
# A real validation photo of the "tree" pose (not in the training set).
PHOTO = REPO.parent / "shared" / "data" / "yoga" / "val" / "tree" / "059ffef4c3ae6e7d.jpg"
EXPECTED = "tree"
SHIPPED_MODEL = REPO / "model" / "yoga-pose.tflite"
TAG = "localhost/yogapose-imgtest-arm64:latest"
AARCH64 = 0xB7  # ELF e_machine of aarch64
GRAVITON2 = "neoverse-n1"


def _unavailable() -> str | None:
    if problem := harness.build_problem():
        return problem
    if not SHIPPED_MODEL.exists():
        return "the shipped model is not in the tree"
    if not PHOTO.exists():
        return f"the validation photo {PHOTO} is not there (shared/ beside the repo)"
    return standin.foreign_problem(ARCH)


@pytest.fixture(scope="module")
def buildah() -> standin.Buildah:
    if reason := _unavailable():
        harness.skip_or_fail(reason, "the arm64 image test")
    # A store of its own, so the x86 test's pruning leaves this one's build cache alone: the
    # emulated steps (pip, the shim's compile) are reused while their inputs are unchanged.
    return standin.Buildah(standin.cache_dir() / ARCH)


@pytest.fixture(scope="module")
def built(buildah, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imagebuild-arm64")
    base = standin.ensure_foreign_standin(buildah, ARCH)
    volumes = standin.foreign_build_volumes(ARCH)
    built = img.build_image(buildah, REPO, base, TAG, tmp / "build.log", arch=ARCH, volumes=volumes)
    # The image and the step images it was built from stay as the next run's cache (as
    # `docker build` keeps them); older runs' step images go.
    img.keep_only_build_cache(buildah, img.images_of_build(tmp / "build.log"))
    return built


@pytest.fixture(scope="module")
def photo_server(loopback_httpserver):
    loopback_httpserver.expect_request("/pose.jpg").respond_with_data(PHOTO.read_bytes(), content_type="image/jpeg")
    return loopback_httpserver


@pytest.fixture(scope="module")
def function(buildah, built, tmp_path_factory):
    log = tmp_path_factory.mktemp("run-arm64") / "function.log"
    # qemu reads QEMU_CPU from the environment of each program it runs: emulate Graviton2's
    # Neoverse N1, the CPU of Lambda arm64, not qemu's default "max" (SVE2, SME, ...).
    env = {**harness.FUNCTION_ENV, "QEMU_CPU": GRAVITON2}
    with img.RunningFunction(buildah, built.name, env, log, hide_cpu_dir=True, start_timeout=120) as running:
        yield running
        print(running.output())  # shown by pytest only when a test fails


def _run_in_image(buildah, image: str, command: list[str], hide_cpu_dir: bool) -> str:
    """``docker run --rm <image> command`` (emulated), optionally with the CPU dir hidden."""
    proc = img.run_in_image(buildah, image, command, hide_cpu_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_image_is_arm64(buildah, built, capsys):
    info = json.loads(buildah("inspect", "--type", "image", built.name))
    assert info["OCIv1"]["architecture"] == ARCH
    assert info["OCIv1"]["config"]["Cmd"] == ["lambda_function.lambda_handler"]
    with img.Rootfs(buildah, built.name) as root:
        task = root / "var" / "task"
        assert not (task / "localtools").exists() and not (task / "yogapose" / "__main__.py").exists()
        # The dependencies are the aarch64 builds (pip ran emulated, so it chose them itself).
        (litert,) = (task / "ai_edge_litert").glob("libLiteRt.so")
        header = litert.read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == AARCH64
        assert (task / "model" / "yoga-pose.tflite").read_bytes() == SHIPPED_MODEL.read_bytes()
    with capsys.disabled():
        print(f"\n[image arm64] built in {built.seconds:.0f} s (emulated); adds "
              f"{built.added_bytes / 2**20:.1f} MiB on top of the base")  # fmt: skip


def test_cpu_dir_is_hidden_as_on_lambda_and_the_shim_answers(buildah, built):
    """The run below really sees no /sys/devices/system/cpu, and the machine is aarch64;
    the image's preloaded shim then answers the two CPU lists (and only those)."""
    script = ("import os, platform; print(platform.machine(), sorted(os.listdir('/sys/devices/system/cpu')), "
              "repr(open('/sys/devices/system/cpu/possible').read()), "
              "repr(open('/sys/devices/system/cpu/present').read()), "
              "os.path.exists('/sys/devices/system/cpu/online'))")  # fmt: skip
    command = ["/usr/bin/taskset", "-c", "0", "/var/lang/bin/python3", "-c", script]
    out = _run_in_image(buildah, built.name, command, hide_cpu_dir=True)
    assert out.split() == ["aarch64", "[]", "'0\\n'", "'0\\n'", "False"], out
    out = _run_in_image(buildah, built.name, ["/var/lang/bin/python3", "-c", script], hide_cpu_dir=False)
    assert "cpu0" in out, out


def test_classifies_a_real_photo_with_the_cpu_dir_hidden(function, photo_server):
    import requests

    resp = requests.post(function.url, json={"url": photo_server.url_for("/pose.jpg")}, timeout=600)
    assert resp.status_code == 200, f"{resp.status_code} {resp.text}\n{function.output()}"
    probs = resp.json()
    labels = json.loads((REPO / "model" / "yoga-pose.json").read_text())["labels"]
    assert isinstance(probs, dict) and set(probs) == set(labels), f"{probs!r}\n{function.output()}"
    assert max(probs, key=probs.get) == EXPECTED, probs
    assert abs(sum(probs.values()) - 1.0) < 1e-3, probs
    # The shim let XNNPACK start: LiteRT did not fall back to its built-in kernels.
    log = function.log.read_text()
    assert "Error in cpuinfo" not in log, function.output()
    assert "XNNPACK delegate" in log, function.output()
    # A second request on the warm instance answers the same.
    again = requests.post(function.url, json={"url": photo_server.url_for("/pose.jpg")}, timeout=600)
    assert again.status_code == 200 and max(again.json(), key=again.json().get) == EXPECTED, again.text


def test_the_build_cache_kept_is_what_buildah_says_the_build_used(tmp_path):
    """The step images named in buildah's output are the cache the next build reuses."""
    log = tmp_path / "build.log"
    log.write_text("[1/3] STEP 2/7: WORKDIR /tmp/build\n"
                   "--> Using cache 7d0c1e140c636b8ac55bad1df111789807aea77f0558c35f276098ddb27ed0cd\n"
                   "--> 7d0c1e140c6\n"
                   "[1/3] STEP 3/7: COPY Pipfile.lock ./\n"
                   "--> 711072ddf9c\n"
                   "Collecting numpy --> not an image\n"
                   "COMMIT localhost/yogapose-imgtest-arm64:latest\n"
                   "--> 00eca826a65\n")  # fmt: skip
    assert img.images_of_build(log) == {
        "7d0c1e140c636b8ac55bad1df111789807aea77f0558c35f276098ddb27ed0cd", "7d0c1e140c6", "711072ddf9c",
        "00eca826a65"}
