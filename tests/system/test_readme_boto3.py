"""The README's ``boto3`` example, extracted from README.md and run against the local
emulator (the real Runtime Interface Emulator, started as ``tests/system/test_emulator.py``
starts it): it must print the pose for a good request and raise for a bad one, although the
emulator answers function errors as HTTP 200 without ``X-Amz-Function-Error``.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO_ROOT
from tests.system.test_emulator import emulator_url, rie_binary  # noqa: F401 - fixtures

_BLOCK = re.compile(r"`boto3`, direct invoke.*?```python\n(.*?)```", re.DOTALL)


def readme_example() -> str:
    match = _BLOCK.search((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    assert match, "README.md has a boto3 direct-invoke example"
    return match.group(1)


def test_the_example_reads_the_function_error_both_ways():
    code = readme_example()
    assert 'boto3.client("lambda")' in code and "<FunctionArn output>" in code
    assert '"FunctionError" in resp' in code and '"errorType" in result' in code


@pytest.fixture
def run_example(emulator_url, monkeypatch):  # noqa: F811 - the imported fixture
    url, _proc, _log = emulator_url
    parts = urlsplit(url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", f"{parts.scheme}://{parts.netloc}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    def run(payload: dict) -> None:
        code = readme_example().replace('"<FunctionArn output>"', '"function"')
        code = re.sub(r"Payload=json\.dumps\(\{.*?\}\)", f"Payload={json.dumps(json.dumps(payload))}", code)
        exec(compile(code, "README.md boto3 example", "exec"), {})  # our own README's example, on purpose

    return run


def test_the_readme_example_raises_on_a_bad_request_from_the_emulator(run_example):
    with pytest.raises(RuntimeError) as info:
        run_example({"url": "ftp://example.com/tree.jpg"})
    error = info.value.args[0]
    assert error["errorType"] == "TargetNotAllowed" and "ftp" in error["errorMessage"]


def test_the_readme_example_prints_the_pose_from_the_emulator(run_example, httpserver, images, capsys):
    httpserver.expect_request("/tree.jpg").respond_with_data(images["jpeg"], content_type="image/jpeg")
    run_example({"url": httpserver.url_for("/tree.jpg")})
    pose, _, rest = capsys.readouterr().out.partition(" ")
    assert pose in rest and len(json.loads(rest.replace("'", '"'))) == 6
