"""``python -m yogapose predict`` over hostile paths and files (localtools/bulk.py), as a user runs it.

File names that are not UTF-8, that look like globs or formulas or hold line separators;
symlink loops under ``**``; paths stat cannot reach; ``--resume`` on files this command did
not write; an output that is one of the inputs; SIGTERM and a killed parent with workers.
Real subprocesses on the tiny test model, real files in tmp_path.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3server import small_jpeg

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[2]


def _permissions_bind() -> bool:
    """Whether a chmod 000 folder is shut to this process (not to root with CAP_DAC_OVERRIDE)."""
    with tempfile.TemporaryDirectory() as tmp:
        shut = Path(tmp) / "shut"
        shut.mkdir(mode=0)
        try:
            os.listdir(shut)
        except PermissionError:
            return True
        finally:
            shut.chmod(0o700)
    return False


PERMISSIONS_BIND = _permissions_bind()
BASE_ENV = {**os.environ, "POWERTOOLS_LOG_LEVEL": "WARNING"}


def cli(*args: str, cwd: Path = REPO, env_extra: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yogapose", "predict", *args], cwd=cwd,
                          env={**BASE_ENV, "PYTHONPATH": str(REPO), **(env_extra or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.split("\n") if line]


def photos(folder: Path, *names: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).write_bytes(small_jpeg(i))
    return [str(folder / name) for name in names]


def one_line_usage_error(out: subprocess.CompletedProcess, message: str) -> None:
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "stdout"])
def test_a_file_name_that_is_not_utf8_gets_a_record_and_resume_knows_it(tiny_model_path, tmp_path, fmt) -> None:
    """os.walk hands back b'bad\\xff.jpg' as a lone surrogate, which strict UTF-8 (a file,
    a desktop locale's stdout) cannot encode: the run died with a traceback."""
    folder = tmp_path / "d"
    photos(folder, os.fsdecode(b"bad\xff.jpg"), "z.jpg")
    model = ("--model", str(tiny_model_path))
    if fmt == "stdout":
        out = cli(str(folder), *model, env_extra={"PYTHONIOENCODING": "utf-8:strict"})
        assert out.returncode == 0, out.stderr
        sources = [r["source"] for r in jsonl(out.stdout)]
    else:
        dest = tmp_path / f"out.{fmt}"
        out = cli(str(folder), "-o", str(dest), *model)
        assert out.returncode == 0, out.stderr
        text = dest.read_text(encoding="utf-8")  # valid UTF-8
        sources = ([r["source"] for r in jsonl(text)] if fmt == "jsonl"
                   else [row[0] for row in csv.reader(io.StringIO(text))][1:])
        again = cli(str(folder), "-o", str(dest), "--resume", *model)
        assert again.returncode == 0 and "2 skipped (--resume)" in again.stderr, again.stderr
        assert dest.read_text(encoding="utf-8") == text
    assert sources == [f"{folder}/bad\\xff.jpg", f"{folder}/z.jpg"]
    assert "Traceback" not in out.stderr


def test_resume_knows_sources_holding_unicode_line_separators(tiny_model_path, tmp_path) -> None:
    """json.dumps leaves U+2028, U+2029 and U+0085 as they are; str.splitlines() broke the
    records there, so --resume ran those files again on every call."""
    folder = tmp_path / "f"
    photos(folder, "ls\u2028x.jpg", "ps\u2029x.jpg", "nel\x85x.jpg", "plain.jpg")
    dest = tmp_path / "r.jsonl"
    first = cli(str(folder), "-o", str(dest), "--model", str(tiny_model_path))
    assert first.returncode == 0, first.stderr
    again = cli(str(folder), "-o", str(dest), "--resume", "--model", str(tiny_model_path))
    assert again.returncode == 0 and "4 skipped (--resume)" in again.stderr, again.stderr
    assert len(jsonl(dest.read_text(encoding="utf-8"))) == 4


def test_an_existing_file_with_glob_characters_is_taken_literally(tiny_model_path, tmp_path) -> None:
    """``img[1].jpg`` exists: it was matched as the pattern img[1].jpg (= img1.jpg) and dropped."""
    literal, other = photos(tmp_path, "img[1].jpg", "ok.jpg")
    out = cli(literal, other, "--model", str(tiny_model_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [r["source"] for r in jsonl(out.stdout)] == [literal, other]
    alone = cli("img[1].jpg", "--model", str(tiny_model_path), cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    assert list(json.loads(alone.stdout)) == ["chair", "cobra", "downdog", "goddess", "tree", "warrior"]


def test_csv_cells_a_spreadsheet_would_run_are_quoted_and_resume_still_knows_them(tiny_model_path, tmp_path) -> None:
    names = ["=cmd.jpg", "+x.jpg", "-y.jpg", "@z.jpg", "'q.jpg", "plain.jpg"]
    photos(tmp_path / "p", *names)
    (tmp_path / "p" / "=notes.txt").write_text("not an image")
    args = ("--", *names, "=notes.txt")
    dest = tmp_path / "out.csv"
    out = cli("-o", str(dest), "--model", str(tiny_model_path), *args, cwd=tmp_path / "p")
    assert out.returncode == 1, out.stderr  # =notes.txt is no image
    rows = list(csv.reader(io.StringIO(dest.read_text())))
    assert [r[0] for r in rows[1:]] == ["'=cmd.jpg", "'+x.jpg", "'-y.jpg", "'@z.jpg", "''q.jpg", "plain.jpg",
                                        "'=notes.txt"]
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)
    again = cli("-o", str(dest), "--resume", "--model", str(tiny_model_path), *args, cwd=tmp_path / "p")
    assert "7 skipped (--resume; 1 of them failed before)" in again.stderr, again.stderr


# ------------------------------------------------------------------------------ paths


def test_a_glob_does_not_follow_symlinked_folders(tiny_model_path, tmp_path) -> None:
    """``**`` followed sub/loop -> .. for ever (exponentially many paths: a hang, memory
    growing) and listed each image dozens of times; the folder walk follows no links."""
    tree = tmp_path / "t"
    expected = photos(tree, "good.jpg") + photos(tree / "sub", "b.jpg")
    (tree / "sub" / "loop").symlink_to("..")
    (tree / "sub" / "loop2.jpg").symlink_to(tree)
    out = cli(f"{tree}/**/*.jpg", "--model", str(tiny_model_path), timeout=60)
    assert out.returncode == 0, out.stderr
    assert sorted(r["source"] for r in jsonl(out.stdout)) == expected
    walked = cli(str(tree), "--model", str(tiny_model_path), timeout=60)
    assert sorted(r["source"] for r in jsonl(walked.stdout)) == expected
    ending = cli(f"{tree}/sub/**", "--model", str(tiny_model_path), timeout=60)  # ``**`` last too
    assert [r["source"] for r in jsonl(ending.stdout)] == expected[1:]


def test_a_name_too_long_for_stat_gets_its_record(tiny_model_path, tmp_path) -> None:
    """Path.is_dir() raised ENAMETOOLONG (pathlib only swallows ENOENT and friends): a
    traceback before anything was classified."""
    (ok,) = photos(tmp_path, "ok.jpg")
    long_file, long_dir = "x" * 300 + ".jpg", "y" * 300
    out = cli(long_file, f"{long_dir}/*.jpg", ok, "--model", str(tiny_model_path), cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    records = jsonl(out.stdout)
    assert [r["source"] for r in records] == [long_file, long_dir, ok]
    assert [r["error"]["code"] for r in records[:2]] == ["bad_request"] * 2
    assert all("File name too long" in r["error"]["message"] for r in records[:2])
    assert "error" not in records[2] and "Traceback" not in out.stderr


def test_a_folder_walk_reports_a_subfolder_it_cannot_list(tiny_model_path, tmp_path) -> None:
    """A subtree past PATH_MAX was dropped without a word (os.walk without onerror); alone
    it gave "no images found". Now the folder gets an error record where its files were."""
    root = tmp_path / "deep"
    (ok,) = photos(root, "ok.jpg")
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(20):  # 20 x 251 characters: beyond the 4096 a path may have
            os.mkdir("d" * 250, dir_fd=fd)
            fd, old = os.open("d" * 250, os.O_RDONLY, dir_fd=fd), fd
            os.close(old)
        with open(os.open("x.jpg", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as fh:
            fh.write(small_jpeg(5))
    finally:
        os.close(fd)
    out = cli(str(root), "--model", str(tiny_model_path))
    assert out.returncode == 1, out.stderr
    first, unlisted = jsonl(out.stdout)
    assert first["source"] == ok and "error" not in first
    assert unlisted["source"].startswith(str(root / ("d" * 250))) and len(unlisted["source"]) > 4000
    assert unlisted["error"]["code"] == "bad_request" and "File name too long" in unlisted["error"]["message"]


@pytest.mark.skipif(not PERMISSIONS_BIND, reason="this process reads a chmod 000 folder (root)")
def test_paths_under_a_folder_without_permission_get_records(tiny_model_path, tmp_path) -> None:
    (ok,) = photos(tmp_path, "ok.jpg")
    photos(tmp_path / "locked", "x.jpg")
    photos(tmp_path / "walked" / "shut", "y.jpg")
    (tmp_path / "locked").chmod(0)
    (tmp_path / "walked" / "shut").chmod(0)
    try:
        out = cli("locked/x.jpg", "locked/*.jpg", "walked", ok, "--model", str(tiny_model_path), cwd=tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)
        (tmp_path / "walked" / "shut").chmod(0o755)
    assert out.returncode == 1, out.stderr
    records = jsonl(out.stdout)
    assert [r["source"] for r in records] == ["locked/x.jpg", "locked", "walked/shut", ok]
    assert [r["error"]["code"] for r in records[:3]] == ["target_not_allowed"] * 3
    assert "Traceback" not in out.stderr


def test_the_output_may_not_be_one_of_the_inputs(tiny_model_path, tmp_path) -> None:
    """``predict f9 -o f9/a.jpg`` replaced the photo with JSON Lines."""
    a, _b = photos(tmp_path / "f9", "a.jpg", "b.jpg")
    before = Path(a).read_bytes()
    (tmp_path / "link.jpg").symlink_to(a)
    os.link(a, tmp_path / "hard.jpg")  # the same inode: resolving paths does not see it
    for dest in (a, str(tmp_path / "f9" / ".." / "f9" / "a.jpg"), str(tmp_path / "link.jpg"),
                 str(tmp_path / "hard.jpg")):
        out = cli(str(tmp_path / "f9"), "-o", dest, "--model", str(tiny_model_path))
        one_line_usage_error(out, "is one of the inputs")
        assert Path(a).read_bytes() == before


# ------------------------------------------------------------------------------ --resume


def first_run(tiny_model_path: Path, tmp_path: Path, dest: Path, *extra: str) -> list[str]:
    sources = photos(tmp_path / "in", "a.jpg", "b.jpg")
    out = cli(*sources, "-o", str(dest), "--model", str(tiny_model_path), *extra)
    assert out.returncode == 0, out.stderr
    return sources


@pytest.mark.parametrize(("first", "then"), [([], ["--details"]), (["--details"], [])])
@pytest.mark.parametrize(("name", "refusal"), [("r.csv", "has other columns than this run writes"),
                                               ("r.jsonl", "a resumed run must write the same kind")])
def test_resume_refuses_records_of_the_other_kind(tiny_model_path, tmp_path, first, then, name, refusal) -> None:
    """--details toggled: 14-wide CSV rows went under an 11-wide header (or the reverse), and
    JSON Lines mixed raw and calibrated records, exit 0."""
    dest = tmp_path / name
    sources = first_run(tiny_model_path, tmp_path, dest, *first)
    before = dest.read_bytes()
    out = cli(*sources, str(tmp_path / "in"), "-o", str(dest), "--resume", "--model", str(tiny_model_path), *then)
    one_line_usage_error(out, refusal)
    assert dest.read_bytes() == before
    same = cli(*sources, "-o", str(dest), "--resume", "--model", str(tiny_model_path), *first)
    assert same.returncode == 0, same.stderr


@pytest.mark.parametrize("kind", ["csv", "json array", "random bytes", "a photo"])
def test_resume_refuses_a_file_that_is_not_json_lines(tiny_model_path, tmp_path, kind) -> None:
    """JSON lines were appended after CSV rows, an indented array or random bytes."""
    dest = tmp_path / "r.jsonl"
    if kind == "csv":
        first_run(tiny_model_path, tmp_path, dest, "--format", "csv")
    elif kind == "json array":
        first_run(tiny_model_path, tmp_path, dest, "--format", "json")
    elif kind == "random bytes":
        dest.write_bytes(bytes(range(256)) * 4)
    else:
        dest.write_bytes(small_jpeg(7))  # no newline at all: it was cut to nothing as a "torn line"
    before = dest.read_bytes()
    photo = photos(tmp_path / "other", "c.jpg")[0]
    out = cli(photo, "-o", str(dest), "--format", "jsonl", "--resume", "--model", str(tiny_model_path))
    one_line_usage_error(out, "--resume only appends to its own output")
    assert dest.read_bytes() == before


def test_resume_after_a_csv_row_torn_inside_a_quoted_name(tiny_model_path, tmp_path) -> None:
    """A kill inside a quoted field with a newline left ``"f1/new\\n``; the row appended
    after it merged with that fragment."""
    folder = tmp_path / "f1"
    photos(folder, "a.jpg", "new\nline.jpg")
    dest = tmp_path / "out.csv"
    assert cli(str(folder), "-o", str(dest), "--model", str(tiny_model_path)).returncode == 0
    whole = dest.read_text()
    dest.write_text(whole[: whole.index(f'"{folder}/new\n') + len(f'"{folder}/new\n')])
    out = cli(str(folder), "-o", str(dest), "--resume", "--model", str(tiny_model_path))
    assert out.returncode == 0 and "1 skipped (--resume)" in out.stderr, out.stderr
    rows = list(csv.reader(io.StringIO(dest.read_text())))
    assert [r[0] for r in rows] == ["source", f"{folder}/a.jpg", f"{folder}/new\nline.jpg"]
    assert all(len(r) == len(rows[0]) for r in rows)


def test_resume_reads_json_lines_that_start_with_a_bom(tiny_model_path, tmp_path) -> None:
    dest = tmp_path / "r.jsonl"
    sources = first_run(tiny_model_path, tmp_path, dest)
    dest.write_bytes(b"\xef\xbb\xbf" + dest.read_bytes())  # saved by an editor
    out = cli(*sources, "-o", str(dest), "--resume", "--model", str(tiny_model_path))
    assert out.returncode == 0 and "2 skipped (--resume)" in out.stderr, out.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_resume_refuses_an_output_that_is_not_a_regular_file(tiny_model_path, tmp_path) -> None:
    """Reading a named pipe to find the done sources waited for ever."""
    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    photo = photos(tmp_path, "a.jpg")[0]
    out = cli(photo, "-o", str(fifo), "--resume", "--model", str(tiny_model_path), timeout=60)
    one_line_usage_error(out, "--resume needs a regular file")


# ------------------------------------------------------------------------------ workers, signals


@pytest.mark.parametrize(("workers", "message"), [("0", "at least 1"), ("-5", "at least 1"), ("65", "at most 64")])
def test_workers_are_checked_for_one_input_too(tiny_model_path, tmp_path, workers, message) -> None:
    """``--workers 0`` with one file was accepted; 200 meant 200 model copies."""
    photo = photos(tmp_path, "a.jpg")[0]
    for args in ([photo], [photo, photo + "x.jpg"]):
        out = cli(*args, "--workers", workers, "--model", str(tiny_model_path))
        one_line_usage_error(out, f"--workers must be {message}")


def held_run(tmp_path: Path, model: Path, silent: socket.socket, dest: Path, *extra: str) -> subprocess.Popen:
    """A run whose fourth source is a URL that never answers: it is held there after three
    records, as a long run is in the middle."""
    before = photos(tmp_path / "in", *(f"a{i}.jpg" for i in range(3)))
    after = photos(tmp_path / "in2", *(f"b{i}.jpg" for i in range(12)))
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/slow.jpg"
    return subprocess.Popen(
        [sys.executable, "-m", "yogapose", "predict", *before, url, *after, "-o", str(dest), "--model", str(model),
         *extra], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**BASE_ENV, "ALLOW_PRIVATE_URLS": "true", "FETCH_READ_TIMEOUT": "60", "FETCH_DEADLINE": "60"})


def wait_for(condition, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def held_workers(tiny_model_path, tmp_path) -> Iterator[tuple[subprocess.Popen, list[int], Path]]:
    dest = tmp_path / "out.jsonl"
    with socket.create_server(("127.0.0.1", 0)) as silent:
        proc = held_run(tmp_path, tiny_model_path, silent, dest, "--workers", "2")
        kids: list[int] = []
        try:
            assert wait_for(lambda: dest.exists() and dest.read_text().count("\n") >= 3), "never got going"
            kids = children(proc.pid)
            assert len(kids) >= 2  # the workers (and multiprocessing's resource tracker)
            yield proc, kids, dest
        finally:
            for pid in [proc.pid, *kids]:  # what a failing run left behind (ours) holds stderr open
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
            proc.communicate(timeout=30)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="lists processes through /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_ends_the_workers_with_the_run(held_workers, signum) -> None:
    """Only Ctrl-C was handled: SIGTERM (kill, timeout, docker stop) left the workers
    running, each with a model, and holding the caller's stderr pipe open; SIGHUP (the
    terminal closed) killed the run and left a JSON array unfinished."""
    proc, kids, dest = held_workers
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "interrupted after 3 of 16 records" in err and "--resume carries on" in err and "Traceback" not in err
    assert wait_for(lambda: not any(alive(pid) for pid in kids), 15), [pid for pid in kids if alive(pid)]
    assert len(jsonl(dest.read_text())) == 3


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="lists processes through /proc")
def test_workers_exit_when_their_parent_is_killed(held_workers) -> None:
    """SIGKILL gives the parent no chance to stop them: they watch it themselves."""
    proc, kids, _dest = held_workers
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert wait_for(lambda: not any(alive(pid) for pid in kids), 15), [pid for pid in kids if alive(pid)]


def test_an_interrupted_json_array_is_kept_as_valid_json(tiny_model_path, tmp_path) -> None:
    """The array was written at the end only: Ctrl-C left 0 bytes, while the message said
    the records were kept and --resume carried on (it refuses JSON)."""
    dest = tmp_path / "out.json"
    with socket.create_server(("127.0.0.1", 0)) as silent:
        proc = held_run(tmp_path, tiny_model_path, silent, dest)
        try:
            wait_for(lambda: dest.exists() and dest.read_text().count('"source"') >= 3, 30)
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert [Path(r["source"]).name for r in json.loads(dest.read_text())] == ["a0.jpg", "a1.jpg", "a2.jpg"]
    assert "interrupted after 3 of 16 records" in err and "complete JSON array" in err
    assert "--resume carries on" not in err and "Traceback" not in err


def test_a_file_larger_than_its_stat_said_is_still_capped() -> None:
    """The size was checked on stat() and then the whole file read: a file that grew in
    between (or a /proc file, which stats as 0 bytes) could be read past the limit."""
    from localtools import bulk
    from yogapose.errors import PayloadTooLarge

    assert os.stat("/proc/self/maps").st_size == 0
    with pytest.raises(PayloadTooLarge):
        bulk.read_local("/proc/self/maps", 16)


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_stopping_the_workers_ends_them_at_once() -> None:
    """The process table was read after shutdown() had set it to None, so no worker was ever
    terminated: an interrupted run waited for every image in flight, and a second Ctrl-C hung."""
    import concurrent.futures
    import multiprocessing

    from localtools import bulk

    # spawn, as bulk's pools: forking this multi-threaded test process risks deadlocks
    pool = concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
    for _ in range(2):
        pool.submit(_sleep, 60)
    time.sleep(3.0)  # both workers started (spawned) and busy
    processes = list(pool._processes.values())  # type: ignore[union-attr]
    started = time.monotonic()
    bulk._stop_workers(pool)
    assert all(not p.is_alive() for p in processes)
    assert time.monotonic() - started < 10


def test_a_file_name_with_a_carriage_return_keeps_the_csv_readable(tiny_model_path, tmp_path) -> None:
    """csv.writer with a "\\n" terminator left a lone "\\r" unquoted: the row broke, and
    --resume stopped with a _csv.Error traceback."""
    (src,) = photos(tmp_path / "u", "cr\rname.jpg")
    dest = tmp_path / "u.csv"
    first = cli(str(tmp_path / "u"), "-o", str(dest), "--model", str(tiny_model_path))
    assert first.returncode == 0, first.stderr
    rows = list(csv.reader(io.StringIO(dest.read_bytes().decode())))
    assert rows[1][0] == src and len(rows[1]) == len(rows[0])
    again = cli(str(tmp_path / "u"), "-o", str(dest), "--resume", "--model", str(tiny_model_path))
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert len(list(csv.reader(io.StringIO(dest.read_bytes().decode())))) == 2  # nothing classified twice


def test_a_stdout_that_fails_is_one_line(tiny_model_path, tmp_path) -> None:
    """> /dev/full: an OSError traceback (only a closed pipe was handled)."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    sources = photos(tmp_path / "in", "a.jpg", "b.jpg")
    with open("/dev/full", "w") as full:
        out = subprocess.run([sys.executable, "-m", "yogapose", "predict", *sources, "--format", "jsonl",
                              "--model", str(tiny_model_path)], cwd=REPO, stdout=full, stderr=subprocess.PIPE,
                             text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "cannot write the records to stdout" in out.stderr


def test_a_glob_that_matches_nothing_among_other_inputs_is_said(tiny_model_path, tmp_path) -> None:
    """'nomatch/*.jpg' beside a real photo vanished: exit 0, no record, no word."""
    (photo,) = photos(tmp_path / "w", "p1.jpg")
    out = cli(str(tmp_path / "nomatch" / "*.jpg"), photo, "--format", "jsonl", "--model", str(tiny_model_path))
    assert out.returncode == 0, out.stderr
    assert f"warning: {tmp_path / 'nomatch' / '*.jpg'} matches no image" in out.stderr
    assert [r["source"] for r in jsonl(out.stdout)] == [photo]


def test_a_glob_ending_in_a_slash_names_folders_only(tmp_path) -> None:
    """As glob.glob: 't/*/' matched the top folder's images too."""
    from localtools import bulk

    (top,) = photos(tmp_path / "t", "top.jpg")
    (inner,) = photos(tmp_path / "t" / "sub", "inner.jpg")
    assert bulk.expand([f"{tmp_path / 't'}/*/"]) == [inner]
    assert sorted(bulk.expand([f"{tmp_path / 't'}/**/"])) == sorted([top, inner])  # t/ is a folder too


def test_a_glob_over_folders_nested_too_deeply_is_one_line(tmp_path) -> None:
    """'**' over ~600 nested folders: a RecursionError traceback."""
    from localtools import bulk

    deep = tmp_path / "d"
    path = str(deep)
    for _ in range(600):
        path = os.path.join(path, "x")
    os.makedirs(path)
    with pytest.raises(bulk.UsageError, match="nest too deeply"):
        bulk.expand([f"{deep}/**/*.jpg"])
