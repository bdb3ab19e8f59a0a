"""template.yaml and Dockerfile, checked offline the way CI and `sam validate --lint` would.

* cfn-lint on the SAM template and on the CloudFormation the SAM translator makes of it
  (``sam validate`` = the same translator; ``--lint`` = cfn-lint);
* the template's conditions, evaluated for concrete parameter values, do what the
  parameters promise (private IAM URL by default, public + CORS only on request, S3 read
  access scoped to one bucket and absent otherwise, optional reserved concurrency);
* hadolint on the Dockerfile, and the Dockerfile's lock export matches Pipfile.lock.
Each linter is also shown a broken input, so a linter that silently passes everything fails.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import ClassVar

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
NO_VALUE = object()
PLACEHOLDER_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/yoga-pose:python3.12-v1"


def _tool(name: str) -> str:
    """A console script from this interpreter's environment (PATH may not include it)."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed in this environment (.ci/setup --dev installs it)")
    return found


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


# --- SAM translation ------------------------------------------------------------------


def _load_template() -> dict:
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse(TEMPLATE.read_text())


@pytest.fixture(scope="module")
def translated(tmp_path_factory) -> dict:
    """CloudFormation from the SAM translator, offline (what `sam validate` runs).

    Like `sam validate`, the image URI `sam build` would fill in is a placeholder, and the
    managed-policy lookup (an IAM call) is a stub: the template names no managed policies.
    """
    import os

    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self) -> dict:
            return {}

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    template = _load_template()
    template["Resources"]["PoseFunction"]["Properties"]["ImageUri"] = PLACEHOLDER_IMAGE
    return transform(template, {}, NoManagedPolicies())


class Evaluator:
    """Resolve parameters, conditions and the few intrinsics the template uses."""

    def __init__(self, template: dict, params: dict[str, str]) -> None:
        self.t = template
        self.params = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
        unknown = set(params) - set(self.params)
        assert not unknown, f"not template parameters: {unknown}"
        self.params.update({k: str(v) for k, v in params.items()})
        self.params |= {"AWS::Partition": "aws", "AWS::Region": "us-east-1"}

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.t["Conditions"][name]))

    def resolve(self, node):
        if isinstance(node, list):
            return [v for v in (self.resolve(n) for n in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            intrinsic = self.INTRINSICS.get(key)
            if intrinsic is not None and not (key == "Fn::Sub" and not isinstance(arg, str)):
                return intrinsic(self, arg)
        out = {}
        for key, value in node.items():
            value = self.resolve(value)
            if value is not NO_VALUE:
                out[key] = value
        return out

    def _ref(self, arg):
        return NO_VALUE if arg == "AWS::NoValue" else self.params.get(arg, {"Ref": arg})

    def _equals(self, arg) -> bool:
        a, b = (self.resolve(x) for x in arg)
        return str(a) == str(b)

    INTRINSICS: ClassVar[dict] = {
        "Ref": _ref,
        "Condition": lambda self, arg: self.condition(arg),
        "Fn::If": lambda self, arg: self.resolve(arg[1] if self.condition(arg[0]) else arg[2]),
        "Fn::Equals": _equals,
        "Fn::Not": lambda self, arg: not self.resolve(arg[0]),
        "Fn::Or": lambda self, arg: any(self.resolve(x) for x in arg),
        "Fn::And": lambda self, arg: all(self.resolve(x) for x in arg),
        "Fn::Sub": lambda self, arg: re.sub(r"\$\{([\w:]+)\}", lambda m: self.params.get(m[1], m[0]), arg),
    }

    def resources(self) -> dict[str, dict]:
        return {
            name: self.resolve(res)
            for name, res in self.t["Resources"].items()
            if "Condition" not in res or self.condition(res["Condition"])
        }


def _deployed(translated: dict, **params) -> dict[str, dict]:
    return Evaluator(translated, params).resources()


def _one(resources: dict, rtype: str) -> dict:
    found = [r for r in resources.values() if r["Type"] == rtype]
    assert len(found) == 1, f"expected one {rtype}, got {len(found)}"
    return found[0]["Properties"]


def _role_statements(resources: dict) -> list[dict]:
    role = _one(resources, "AWS::IAM::Role")
    return [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]


def _public_permissions(resources: dict) -> list[dict]:
    return [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Permission" and r["Properties"].get("Principal") == "*"
    ]


# --- tests ------------------------------------------------------------------------------


def test_cfn_lint_passes_on_the_sam_template():
    proc = _run(_tool("cfn-lint"), str(TEMPLATE))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cfn_lint_fails_a_broken_template(tmp_path):
    broken = tmp_path / "template.yaml"
    text = TEMPLATE.read_text()
    assert "MemorySize: !Ref MemorySize" in text
    broken.write_text(text.replace("MemorySize: !Ref MemorySize", "MemorySiz: !Ref MemorySize"))
    proc = _run(_tool("cfn-lint"), str(broken))
    assert proc.returncode != 0 and "MemorySiz" in proc.stdout, proc.stdout


def test_sam_translation_is_valid_cloudformation(translated, tmp_path):
    types = sorted(r["Type"] for r in translated["Resources"].values())
    assert not [t for t in types if t.startswith("AWS::Serverless::")], types
    fn = _one(translated["Resources"], "AWS::Lambda::Function")
    assert fn["PackageType"] == "Image" and fn["Code"] == {"ImageUri": PLACEHOLDER_IMAGE}
    assert "Handler" not in fn and "Runtime" not in fn  # both come from the image
    assert translated["Outputs"]["FunctionUrl"]["Value"] == {
        "Fn::GetAtt": ["PoseFunctionUrl", "FunctionUrl"]
    }
    assert "FunctionArn" in translated["Outputs"]
    out = tmp_path / "translated.json"
    out.write_text(json.dumps(translated))
    proc = _run(_tool("cfn-lint"), str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_defaults_give_a_private_iam_url_and_no_extra_access(translated):
    res = _deployed(translated)
    url = _one(res, "AWS::Lambda::Url")
    assert url["AuthType"] == "AWS_IAM"
    assert "Cors" not in url
    assert _public_permissions(res) == []
    assert _role_statements(res) == []  # only the managed basic-execution (logs) policy
    assert _one(res, "AWS::IAM::Role")["ManagedPolicyArns"] == [
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    ]
    fn = _one(res, "AWS::Lambda::Function")
    assert fn["Architectures"] == ["x86_64"]
    assert (fn["MemorySize"], fn["Timeout"]) == ("1769", "15")
    assert "ReservedConcurrentExecutions" not in fn


def test_public_demo_switches_to_auth_none_with_cors_and_public_grants(translated):
    res = _deployed(translated, PublicDemo="true")
    url = _one(res, "AWS::Lambda::Url")
    assert url["AuthType"] == "NONE"
    assert url["Cors"]["AllowOrigins"] == ["*"] and "POST" in url["Cors"]["AllowMethods"]
    grants = {p["Action"]: p for p in _public_permissions(res)}
    assert set(grants) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    assert grants["lambda:InvokeFunctionUrl"]["FunctionUrlAuthType"] == "NONE"
    # The public InvokeFunction grant only holds for calls through the URL.
    assert grants["lambda:InvokeFunction"]["InvokedViaFunctionUrl"] is True
    # Anyone may call it: s3:// URIs through it would read the function's buckets for them.
    from yogapose.config import load_settings

    env = _one(res, "AWS::Lambda::Function")["Environment"]["Variables"]
    assert load_settings({k: str(v) for k, v in env.items()}).s3_urls_over_http is False
    private = _one(_deployed(translated), "AWS::Lambda::Function")["Environment"]["Variables"]
    assert load_settings({k: str(v) for k, v in private.items()}).s3_urls_over_http is True


def test_readable_bucket_grants_get_object_on_that_bucket_only(translated):
    statements = _role_statements(_deployed(translated, ReadableBucket="my-yoga-photos"))
    assert len(statements) == 1, statements
    (stmt,) = statements
    assert stmt["Effect"] == "Allow"
    assert stmt["Action"] in ("s3:GetObject", ["s3:GetObject"])
    assert stmt["Resource"] == "arn:aws:s3:::my-yoga-photos/*"


@pytest.mark.parametrize(("value", "expected"), [("-1", None), ("0", None), ("5", "5")])
def test_reserved_concurrency_only_when_positive(translated, value, expected):
    fn = _one(_deployed(translated, ReservedConcurrency=value), "AWS::Lambda::Function")
    assert fn.get("ReservedConcurrentExecutions") == expected


def test_local_runs_get_the_templates_function_timeout():
    """The CLI, the local server, the emulator and the fake context budget a request as the
    deployed function's default Timeout does (they used 30 and 60 s against Lambda's 15)."""
    from localtools.context import LambdaContext
    from localtools.localserver import make_server
    from yogapose.deadline import FUNCTION_TIMEOUT_S

    assert _load_template()["Parameters"]["Timeout"]["Default"] == FUNCTION_TIMEOUT_S
    assert LambdaContext().get_remaining_time_in_millis() <= FUNCTION_TIMEOUT_S * 1000
    server = make_server(port=0, handler=lambda event, context: {})
    try:
        assert server.timeout_s == FUNCTION_TIMEOUT_S  # `serve` gave a request 30 s
    finally:
        server.server_close()


def test_a_map_batch_holds_at_most_the_templates_largest_batch():
    from yogapose.batch import MAX_MAP_ITEMS

    assert _load_template()["Parameters"]["BulkBatchSize"]["MaxValue"] == MAX_MAP_ITEMS


def test_arm64_is_selectable(translated):
    fn = _one(_deployed(translated, Architecture="arm64"), "AWS::Lambda::Function")
    assert fn["Architectures"] == ["arm64"]


def test_environment_is_valid_configuration(translated):
    """Every variable is in yogapose.config's table, a literal value is that table's default
    (a default changed in the code cannot silently diverge from the template; parameters may
    differ), and together they load as valid settings."""
    from yogapose.config import BY_NAME, load_settings

    env = _one(_deployed(translated), "AWS::Lambda::Function")["Environment"]["Variables"]
    assert set(env) <= set(BY_NAME), f"unknown variables (typo?): {set(env) - set(BY_NAME)}"
    literal = _load_template()["Resources"]["PoseFunction"]["Properties"]["Environment"]["Variables"]
    for name, value in literal.items():
        if isinstance(value, str):
            assert value == BY_NAME[name].default_text(), f"{name}: {value!r} is not the code's default"
    # NUM_THREADS follows the memory size when unset; a fixed value would undo that.
    assert "NUM_THREADS" not in env
    settings = load_settings({k: str(v) for k, v in env.items()})
    assert settings.allow_private is False
    # A fetch that uses its whole budget must still leave time to answer within Timeout.
    timeout = float(_load_template()["Parameters"]["Timeout"]["Default"])
    assert settings.fetch_deadline < timeout


@pytest.mark.parametrize(("upload", "results", "nested"), [
    ("uploads/", "results/", False),
    ("results/uploads/", "results/", True),   # every upload silently skipped
    ("uploads/", "uploads/results/", True),   # every result triggers once more
])
def test_classify_on_upload_prefixes_that_nest_stop_the_function_at_init(translated, upload, results,
                                                                          nested):
    """A template Rule can only compare prefixes for equality; the function is given both
    and refuses nested ones at init, naming them."""
    from yogapose.config import load_settings

    env = _one(_deployed(translated, ClassifyOnUpload="true", UploadPrefix=upload, ResultsPrefix=results),
               "AWS::Lambda::Function")["Environment"]["Variables"]
    assert env["UPLOAD_PREFIX"] == upload
    env = {k: str(v) for k, v in env.items()}
    if nested:
        with pytest.raises(ValueError, match="UPLOAD_PREFIX .* must not nest"):
            load_settings(env)
    else:
        assert load_settings(env).upload_prefix == upload
    plain = _one(_deployed(translated), "AWS::Lambda::Function")["Environment"]["Variables"]
    assert load_settings({k: str(v) for k, v in plain.items()}).upload_prefix == ""


def test_the_bulk_results_prefix_has_no_iam_wildcards():
    pattern = _load_template()["Parameters"]["BulkResultsPrefix"]["AllowedPattern"]
    assert re.fullmatch(pattern, "bulk-results") and re.fullmatch(pattern, "runs/2026")
    assert not any(re.fullmatch(pattern, v) for v in ("bulk*", "runs/?", "runs/", "/runs"))


@pytest.mark.parametrize("value", [" results/", "res*/", "a/b/", "/x/", "x"])
def test_upload_and_results_prefixes_are_one_plain_folder_name(value):
    """The prefixes are used raw in IAM resources and the trigger filter: a space denied every
    result write, '*' widened the grant; one level each, two different ones cannot nest."""
    params = _load_template()["Parameters"]
    for name in ("UploadPrefix", "ResultsPrefix"):
        pattern = params[name]["AllowedPattern"]
        assert re.fullmatch(pattern, params[name]["Default"])
        assert not re.fullmatch(pattern, value), (name, value)


def test_the_stacks_buckets_refuse_plain_http():
    """The upload and bulk-results buckets had no bucket policy: plain-HTTP requests passed."""
    resources = _load_template()["Resources"]
    for bucket in ("BulkResultsBucket", "UploadBucket"):
        (policy,) = [r for r in resources.values() if r["Type"] == "AWS::S3::BucketPolicy"
                     and r["Properties"]["Bucket"] == {"Ref": bucket}]
        assert policy["Condition"] == resources[bucket]["Condition"]
        (stmt,) = policy["Properties"]["PolicyDocument"]["Statement"]
        assert stmt["Effect"] == "Deny" and stmt["Action"] == "s3:*" and stmt["Principal"] == "*"
        assert stmt["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert {"Fn::GetAtt": [bucket, "Arn"]} in stmt["Resource"]


def test_hadolint_passes_on_the_dockerfile():
    proc = _run(_tool("hadolint"), str(REPO / "Dockerfile"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_fails_a_sloppy_dockerfile(tmp_path):
    sloppy = tmp_path / "Dockerfile"
    sloppy.write_text("FROM python\nRUN pip install numpy\nCOPY . .\n")
    proc = _run(_tool("hadolint"), str(sloppy))
    assert proc.returncode != 0 and "DL3006" in proc.stdout, proc.stdout


def _dockerfile_lock_export(tmp_path: Path) -> list[str]:
    """Run the Dockerfile's own lock -> requirements one-liner against Pipfile.lock."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", "")
    match = re.search(r"python3 -c '(.+?)'\s+> requirements\.txt", text)
    assert match, "lock export command not found in the Dockerfile"
    shutil.copy2(REPO / "Pipfile.lock", tmp_path / "Pipfile.lock")
    proc = subprocess.run([sys.executable, "-c", match[1]], cwd=tmp_path, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return proc.stdout.splitlines()


def test_image_requirements_are_the_locked_runtime_group(tmp_path):
    from packaging.requirements import Requirement

    lock = json.loads((REPO / "Pipfile.lock").read_text())
    lines = _dockerfile_lock_export(tmp_path)
    assert len(lines) == len(lock["default"])
    for line in lines:
        spec, _, hashes = line.partition(" --hash=")
        req = Requirement(spec.strip())
        locked = lock["default"][req.name]
        assert str(req.specifier) == locked["version"]  # exact ==pins only
        assert set(("--hash=" + hashes).split()) == {f"--hash={h}" for h in locked["hashes"]}
    # Only runtime packages: no test, lint or training tools in the image.
    pipfile = tomllib.loads((REPO / "Pipfile").read_text())
    names = {Requirement(line.split(" ")[0]).name for line in lines}
    assert set(pipfile["packages"]) <= names
    assert not names & {"pytest", "tensorflow-cpu", "keras", "moto", "ruff", "awslambdaric"}
    assert pipfile["packages"]["ai-edge-litert"] == "==2.3.0"


def test_dockerignore_keeps_tests_data_and_tools_out():
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for name in (".git", ".venv", "tests", "build", "bench", "convert", ".ci"):
        assert name in ignored, name
    # ... while everything the Dockerfile copies stays in.
    copied = re.findall(r"^COPY (?!--from)(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert copied and not {c.rstrip("/") for c in copied} & ignored, copied

