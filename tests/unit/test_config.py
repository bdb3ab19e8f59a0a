"""Configuration: the table in yogapose/config.py is what the code reads and the README shows."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from yogapose import observability
from yogapose.config import (
    BY_NAME,
    DEFAULT_MODEL_PATH,
    VARIABLES,
    Settings,
    load_settings,
    log_level,
    platform,
    setting,
)

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def readme_table() -> dict[str, str]:
    """``{variable: default cell}`` from the README's Configuration table."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([A-Z][A-Z0-9_]+)`", cells[0]) if len(cells) == 3 else None
        if match:
            rows[match.group(1)] = cells[1]
    assert rows, "no Configuration table found in README.md"
    return rows


def test_readme_configuration_table_is_the_config_table() -> None:
    rows = readme_table()
    assert list(rows) == [v.name for v in VARIABLES], "same variables, same order"
    for var in VARIABLES:
        # The cell may add a gloss in parentheses: "10485760 (10 MiB)".
        shown = re.sub(r"\s*\(.*\)$", "", rows[var.name].replace("`", ""))
        assert shown == var.default_text(), var.name


def test_every_settings_field_but_the_user_agent_has_a_variable() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)} - {"user_agent"}
    assert fields == {v.attr for v in VARIABLES if v.attr is not None}


def test_defaults_are_the_tables_and_an_empty_environment_gives_them() -> None:
    assert load_settings({}) == Settings()
    assert Settings().max_bytes == BY_NAME["MAX_IMAGE_BYTES"].default == 10 * 1024 * 1024
    assert Settings().model_path == DEFAULT_MODEL_PATH
    # Powertools' logger and metrics are given the table's values.
    assert observability.logger.service == setting("POWERTOOLS_SERVICE_NAME")
    assert observability.metrics.namespace == setting("POWERTOOLS_METRICS_NAMESPACE")
    assert setting("POWERTOOLS_SERVICE_NAME", {}) == "yoga-pose"
    assert setting("POWERTOOLS_SERVICE_NAME", {"POWERTOOLS_SERVICE_NAME": "mine"}) == "mine"


def test_no_module_but_config_reads_the_environment() -> None:
    """One settings table read in one place: every other module of the package (and the
    handler) asks yogapose.config, which lists what it reads from the platform too."""
    readers = []
    for path in [*sorted((REPO / "yogapose").glob("*.py")), REPO / "lambda_function.py"]:
        if path.name == "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "environb"}:
                readers.append(f"{path.name}:{node.lineno}")
    assert readers == []


def test_platform_variables_are_named_in_the_table() -> None:
    assert platform("AWS_REGION", {"AWS_REGION": "eu-west-1"}) == "eu-west-1"
    assert platform("AWS_REGION", {"AWS_REGION": ""}) is None
    with pytest.raises(KeyError, match="not a platform variable"):
        platform("HOME", {"HOME": "/root"})


def test_values_are_parsed() -> None:
    s = load_settings({"MAX_IMAGE_BYTES": "123", "FETCH_DEADLINE": "2.5", "ALLOW_PRIVATE_URLS": "Yes",
                       "MODEL_PATH": "/m/x.tflite", "BATCH_LIMIT": " ", "UNSURE_THRESHOLD": "0"})
    assert (s.max_bytes, s.fetch_deadline, s.allow_private) == (123, 2.5, True)
    assert s.model_path == Path("/m/x.tflite")
    assert s.batch_limit == 16  # blank means default
    assert s.unsure_threshold == 0.0


@pytest.mark.parametrize(("name", "raw", "message"), [
    ("MAX_IMAGE_BYTES", "ten", "MAX_IMAGE_BYTES must be an integer, got 'ten'"),
    ("MAX_IMAGE_BYTES", "0", "MAX_IMAGE_BYTES must be >= 1, got 0"),
    ("FETCH_READ_TIMEOUT", "soon", "FETCH_READ_TIMEOUT must be a number, got 'soon'"),
    ("FETCH_DEADLINE", "0", "FETCH_DEADLINE must be >= 0.01, got 0.0"),
    ("FETCH_MAX_REDIRECTS", "-1", "FETCH_MAX_REDIRECTS must be >= 0, got -1"),
    ("ALLOW_PRIVATE_URLS", "maybe", "ALLOW_PRIVATE_URLS must be true/false, got 'maybe'"),
    ("NUM_THREADS", "0", "NUM_THREADS must be >= 1, got 0"),
    # nan passes every bound check and used to break fetches (nan timeouts) or /health's JSON
    ("FETCH_CONNECT_TIMEOUT", "nan", "FETCH_CONNECT_TIMEOUT must be a finite number, got 'nan'"),
    ("FETCH_DEADLINE", "inf", "FETCH_DEADLINE must be a finite number, got 'inf'"),
    ("UNSURE_THRESHOLD", "1e400", "UNSURE_THRESHOLD must be a finite number, got '1e400'"),
    ("UNSURE_THRESHOLD", "5", "UNSURE_THRESHOLD must be <= 1, got 5.0"),
    ("NUM_THREADS", "99999999999999999999", "NUM_THREADS must be <= 64, got 99999999999999999999"),
    # read by Powertools, checked here so the init names the variable
    ("POWERTOOLS_LOG_LEVEL", "LOUD", "POWERTOOLS_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, "
                                     "CRITICAL, got 'LOUD'"),
    ("POWERTOOLS_METRICS_DISABLED", "maybe", "POWERTOOLS_METRICS_DISABLED must be true/false, got 'maybe'"),
])
def test_malformed_values_name_the_variable(name: str, raw: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        load_settings({name: raw})
    assert str(info.value) == message


@pytest.mark.parametrize(("memory", "threads"), [
    (None, 1), ("128", 1), ("1769", 1), ("2048", 1), ("3538", 2), ("5307", 3), ("10240", 5), ("junk", 1),
])
def test_num_threads_follows_the_memory_size_not_the_visible_cores(memory: str | None, threads: int) -> None:
    env = {} if memory is None else {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": memory}
    assert load_settings(env).num_threads == threads
    assert load_settings({**env, "NUM_THREADS": "4"}).num_threads == 4  # an explicit value wins


@pytest.mark.parametrize(("env", "level"), [
    ({}, "INFO"),
    ({"POWERTOOLS_LOG_LEVEL": " warning"}, "WARNING"),  # Powertools itself failed on ' warning'
    ({"LOG_LEVEL": "debug"}, "DEBUG"),                   # its legacy name
    ({"POWERTOOLS_LOG_LEVEL": "ERROR", "LOG_LEVEL": "debug"}, "ERROR"),
    ({"POWERTOOLS_LOG_LEVEL": "fatal"}, "FATAL"),   # every name Python's logging knows
    ({"LOG_LEVEL": "NOTSET"}, "NOTSET"),
])
def test_the_log_level_is_read_and_normalised_here(env: dict, level: str) -> None:
    assert log_level(env) == level


@pytest.mark.parametrize("name", ["POWERTOOLS_LOG_LEVEL", "LOG_LEVEL"])
def test_a_malformed_log_level_names_its_variable_at_import_and_in_the_cli(name: str, tmp_path: Path) -> None:
    """Powertools read the level at import and raised 'Unknown level' without the variable's
    name; the CLI printed that traceback."""
    import os
    import subprocess
    import sys

    with pytest.raises(ValueError, match=f"^{name} must be one of"):
        log_level({name: "LOUD"})
    env = {**os.environ, name: "LOUD"}
    env.pop("POWERTOOLS_LOG_LEVEL" if name == "LOG_LEVEL" else "LOG_LEVEL", None)
    cli = subprocess.run([sys.executable, "-m", "yogapose", "predict", str(tmp_path / "x.jpg")], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2
    assert cli.stderr.strip() == f"python -m yogapose: error: {name} must be one of DEBUG, INFO, WARNING, " \
        "ERROR, CRITICAL, got 'LOUD'"
    imported = subprocess.run([sys.executable, "-c", "import yogapose.observability"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
    assert imported.returncode != 0 and f"ValueError: {name} must be one of" in imported.stderr
