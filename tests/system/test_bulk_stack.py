"""The optional bulk stack and classify-on-upload in template.yaml, offline.

* What CloudFormation deploys: the SAM translation's state machine, with its definition
  substitutions resolved, is the definition the harness walks (tests/sfn_harness.py).
* Two independent ASL validators accept it (``statelint`` from PyPI, ``asl-validator`` from
  npm, installed by .ci/run into .tools/npm) and reject a broken copy.
* Conditions: nothing bulk by default; least-privilege IAM when switched on.
* End to end: a Distributed Map over a moto bucket of 2,500 images (plus folder markers and
  non-images), walked by the harness from the template's own definition, invoking the real
  handler on the tiny test model, with the tolerated-failure rule, Retry and ResultWriter.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.s3server import aws_env, client, moto_s3, small_jpeg
from tests.sfn_harness import (
    FUNCTION_ARN,
    DistributedMapHarness,
    ExecutionFailed,
    LambdaServiceError,
    definition_from_template,
)
from tests.system.test_template import Evaluator, _one, _run, _tool
from tests.system.test_template import translated as translated  # the module's fixture, shared
from yogapose import s3client

REPO = Path(__file__).resolve().parents[2]
ASL_VALIDATOR = REPO / ".tools" / "npm" / "node_modules" / ".bin" / "asl-validator"
BULK = {"BulkStack": "true", "ReadableBucket": "my-yoga-photos"}


def _deployed(translated: dict, **params: str) -> dict[str, dict]:
    return Evaluator(translated, params).resources()


def _statements(role: dict) -> list[dict]:
    return [s for p in role["Properties"].get("Policies", []) for s in p["PolicyDocument"]["Statement"]]


def _roles(res: dict) -> dict[str, dict]:
    return {k: v for k, v in res.items() if v["Type"] == "AWS::IAM::Role"}


def deployed_definition(translated: dict, **params: str) -> dict:
    """The state machine definition CloudFormation would create: the translation's
    DefinitionString with its DefinitionSubstitutions resolved for ``params``."""
    res = _deployed(translated, **params)
    props = res["BulkStateMachine"]["Properties"]
    text = "\n".join(props["DefinitionString"]["Fn::Join"][1])
    for name, value in props["DefinitionSubstitutions"].items():
        if value == {"Fn::GetAtt": ["PoseFunction", "Arn"]}:
            value = FUNCTION_ARN
        elif value == {"Ref": "BulkResultsBucket"}:
            value = "results-bucket"
        assert isinstance(value, str), (name, value)
        text = text.replace("${" + name + "}", value)
    assert "${" not in text
    return json.loads(text)


# ------------------------------------------------------------------------ definition + ASL


def test_the_harness_walks_what_cloudformation_deploys(translated) -> None:
    for params in (BULK, {**BULK, "ReservedConcurrency": "7", "BulkBatchSize": "40"}):
        assert deployed_definition(translated, **params) == definition_from_template(params)


def test_numbers_reach_the_map_as_integers(translated) -> None:
    d = definition_from_template(BULK)
    settings = d["States"]["Settings"]["Parameters"]
    assert settings["input.$"].startswith("States.JsonMerge(")  # defaults under the execution input
    assert settings["batchSize.$"] == "States.StringToJson('25')"
    assert settings["maxConcurrency.$"] == "States.StringToJson('10')"
    assert settings["toleratedFailurePercentage.$"] == "States.StringToJson('5')"
    # MaxConcurrency is the function's reserved concurrency when there is one.
    d = definition_from_template({**BULK, "ReservedConcurrency": "3"})
    assert d["States"]["Settings"]["Parameters"]["maxConcurrency.$"] == "States.StringToJson('3')"
    m = d["States"]["ClassifyAll"]
    assert m["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"}
    assert m["ItemReader"]["Resource"] == "arn:aws:states:::s3:listObjectsV2"
    assert m["ResultWriter"]["Parameters"] == {"Bucket": "results-bucket", "Prefix": "bulk-results"}


def _write(tmp_path: Path, name: str, definition: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(definition, indent=2))
    return path


def _broken(definition: dict) -> dict:
    """The same definition with the map's item processor gone: invalid ASL."""
    broken = json.loads(json.dumps(definition))
    del broken["States"]["ClassifyAll"]["ItemProcessor"]
    return broken


def test_statelint_accepts_the_definition_and_rejects_a_broken_one(tmp_path) -> None:
    good = _write(tmp_path, "bulk.asl.json", definition_from_template(BULK))
    proc = _run(_tool("statelint"), str(good))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _run(_tool("statelint"), str(_write(tmp_path, "broken.asl.json", _broken(json.loads(good.read_text())))))
    assert proc.returncode != 0 and "ItemProcessor" in proc.stdout + proc.stderr, proc.stdout


def _asl_validator() -> str:
    if ASL_VALIDATOR.exists():
        return str(ASL_VALIDATOR)
    if os.environ.get("CI") == "true":
        pytest.fail(f"{ASL_VALIDATOR} is missing: .ci/run installs it (npm ci from .ci/npm)")
    pytest.skip("asl-validator not installed (npm ci --prefix .tools/npm, see .ci/run)")


def test_asl_validator_accepts_the_definition_and_rejects_a_broken_one(tmp_path) -> None:
    tool = _asl_validator()
    good = _write(tmp_path, "bulk.asl.json", definition_from_template(BULK))
    proc = _run(tool, "--json-path", str(good))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = _write(tmp_path, "broken.asl.json", _broken(json.loads(good.read_text())))
    proc = _run(tool, "--json-path", str(broken))
    assert proc.returncode != 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------ conditions + IAM


def test_nothing_bulk_by_default(translated) -> None:
    res = _deployed(translated)
    types = {r["Type"] for r in res.values()}
    assert not types & {"AWS::StepFunctions::StateMachine", "AWS::S3::Bucket"}
    assert list(_roles(res)) == ["PoseFunctionRole"]
    assert not [r for r in res.values() if r["Type"] == "AWS::Lambda::Permission"
                and r["Properties"].get("Principal") == "s3.amazonaws.com"]
    fn = _one(res, "AWS::Lambda::Function")
    assert fn["Environment"]["Variables"]["RESULTS_PREFIX"] == "results/"


def test_bulk_stack_role_is_least_privilege(translated) -> None:
    res = _deployed(translated, **BULK)
    sm = res["BulkStateMachine"]["Properties"]
    assert sm["StateMachineType"] == "STANDARD"
    role = res["BulkStateMachineRole"]
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": ["states.amazonaws.com"]}
    assert role["Properties"].get("ManagedPolicyArns", []) == []
    by_sid = {s["Sid"]: s for s in _statements(role)}
    assert all(s["Effect"] == "Allow" for s in by_sid.values())
    assert by_sid["ListTheInputBucket"]["Action"] == "s3:ListBucket"
    assert by_sid["ListTheInputBucket"]["Resource"] == "arn:aws:s3:::my-yoga-photos"
    write = by_sid["WriteTheResultsPrefix"]
    assert "s3:PutObject" in write["Action"] and "s3:DeleteObject" not in write["Action"]
    assert write["Resource"] == "${BulkResultsBucket.Arn}/bulk-results/*"  # Sub: that bucket's ARN
    invoke = by_sid["InvokeThisFunction"]
    assert invoke["Action"] == "lambda:InvokeFunction"
    assert invoke["Resource"] == [{"Fn::GetAtt": ["PoseFunction", "Arn"]}, "${PoseFunction.Arn}:*"]
    assert by_sid["RunItsOwnChildExecutions"]["Resource"].endswith(":stateMachine:${AWS::StackName}-bulk")
    assert set(by_sid) == {"ListTheInputBucket", "WriteTheResultsPrefix", "InvokeThisFunction",
                           "RunItsOwnChildExecutions", "WatchItsOwnChildExecutions"}
    # No wildcard actions or resources anywhere.
    text = json.dumps(list(by_sid.values()))
    assert '"*"' not in text and '"s3:*"' not in text
    # The function itself still reads only ReadableBucket's objects.
    fn_statements = _statements(res["PoseFunctionRole"])
    assert [s["Resource"] for s in fn_statements] == ["arn:aws:s3:::my-yoga-photos/*"]
    outputs = translated["Outputs"]
    assert outputs["BulkStateMachineArn"]["Condition"] == "IsBulkStack"


def test_bulk_stack_requires_an_input_bucket(translated) -> None:
    rule = translated["Rules"]["BulkStackNeedsAnInputBucket"]
    ev = Evaluator(translated, {"BulkStack": "true"})
    assert ev.resolve(rule["RuleCondition"]) is True
    assert ev.resolve(rule["Assertions"][0]["Assert"]) is False  # empty ReadableBucket: refused
    assert Evaluator(translated, BULK).resolve(rule["Assertions"][0]["Assert"]) is True


def test_classify_on_upload_wires_the_bucket_and_scopes_the_function(translated) -> None:
    res = _deployed(translated, ClassifyOnUpload="true")
    bucket = res["UploadBucket"]
    assert bucket["DependsOn"] == "UploadInvokePermission"
    (conf,) = bucket["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    assert conf["Event"] == "s3:ObjectCreated:*"
    assert conf["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "uploads/"}]
    perm = res["UploadInvokePermission"]["Properties"]
    assert (perm["Principal"], perm["Action"]) == ("s3.amazonaws.com", "lambda:InvokeFunction")
    assert "SourceArn" in perm and "SourceAccount" in perm
    by_sid = {s["Sid"]: s for s in _statements(res["PoseFunctionRole"])}
    assert by_sid["ReadUploads"]["Action"] == "s3:GetObject"
    assert by_sid["WriteResultsOnly"]["Action"] == "s3:PutObject"
    read_res = json.dumps(by_sid["ReadUploads"]["Resource"])
    write_res = json.dumps(by_sid["WriteResultsOnly"]["Resource"])
    assert "${UploadPrefix}*" in read_res and "${ResultsPrefix}*" in write_res
    # The trigger's prefix and the results prefix differ (rule), and the function knows it.
    rule = translated["Rules"]["UploadResultsNeverTriggerAgain"]
    same = Evaluator(translated, {"ClassifyOnUpload": "true", "ResultsPrefix": "uploads/"})
    assert same.resolve(rule["Assertions"][0]["Assert"]) is False
    fn = _one(_deployed(translated, ClassifyOnUpload="true", ResultsPrefix="out/"), "AWS::Lambda::Function")
    assert fn["Environment"]["Variables"]["RESULTS_PREFIX"] == "out/"


def test_the_upload_bucket_name_is_the_one_the_policies_name(translated) -> None:
    """Bucket, permission and policies build the same name (a !Ref would be a cycle)."""
    text = json.dumps(translated["Resources"])
    assert text.count('"yoga-uploads"') == 1  # the bucket's !Join
    assert len(re.findall(r"yoga-uploads-\$\{Id\}", text)) == 3  # permission + two policies


# ------------------------------------------------------------------------ end to end

BUCKET = "yoga-archive"
RESULTS = "bulk-results-bucket"
N_IMAGES = 2500


@pytest.fixture(scope="module")
def archive() -> Iterator[dict[str, Any]]:
    """A moto bucket: 2,500 small JPEGs in folders, folder markers, non-images."""
    with moto_s3() as endpoint, pytest.MonkeyPatch.context() as mp:
        aws_env(mp, endpoint)
        s3 = client()
        s3.create_bucket(Bucket=BUCKET)
        s3.create_bucket(Bucket=RESULTS)
        keys = [f"shoot/day{i % 5}/img{i:04d}.jpg" for i in range(N_IMAGES)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:  # boto3 clients are thread-safe
            list(pool.map(lambda i: s3.put_object(Bucket=BUCKET, Key=keys[i], Body=small_jpeg(i)),
                          range(N_IMAGES)))
        markers = ["shoot/"] + [f"shoot/day{d}/" for d in range(5)]
        for key in markers:
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"")
        others = ["shoot/README.txt", "shoot/day1/contact-sheet.pdf", "shoot/day2/.DS_Store"]
        for key in others:
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"not an image")
        s3.put_object(Bucket=BUCKET, Key="elsewhere/img.jpg", Body=small_jpeg(1))  # not listed
        yield {"endpoint": endpoint, "images": keys, "markers": markers, "others": others}


@pytest.fixture
def s3_env(archive, monkeypatch):
    aws_env(monkeypatch, archive["endpoint"])
    s3client.reset()
    yield archive
    s3client.reset()


def _read_results(s3: Any, manifest_key: str) -> tuple[dict, list[dict]]:
    manifest = json.loads(s3.get_object(Bucket=RESULTS, Key=manifest_key)["Body"].read())
    executions = []
    for entry in manifest["ResultFiles"]["SUCCEEDED"]:
        executions += json.loads(s3.get_object(Bucket=RESULTS, Key=entry["Key"])["Body"].read())
    return manifest, executions


@pytest.mark.timeout(900)
def test_a_distributed_map_over_2500_images_completes_with_per_item_results(handler, s3_env) -> None:
    s3 = client()
    calls = {"n": 0}

    def invoke(function: str, payload: Any) -> Any:
        assert function == FUNCTION_ARN
        calls["n"] += 1
        if calls["n"] == 2:
            raise LambdaServiceError("TooManyRequestsException")  # throttled once: retried
        return handler(payload, None)

    sfn = DistributedMapHarness(definition_from_template({**BULK, "ReadableBucket": BUCKET},
                                                         results_bucket=RESULTS), s3, invoke)
    out = sfn.run({"bucket": BUCKET, "prefix": "shoot/"})
    run = sfn.map_run
    listed = N_IMAGES + len(s3_env["markers"]) + len(s3_env["others"])
    assert run.items == listed and run.list_pages == math.ceil(listed / 1000) == 3
    assert len(run.batches) == math.ceil(listed / 25)
    assert all(len(b["Items"]) <= 25 and b["BatchInput"] == {"bucket": BUCKET, "details": False}
               for b in run.batches)
    assert sfn.sleeps == [2] and run.failed_items == 0
    assert (run.max_concurrency, run.tolerated_failure_percentage) == (10, 5)
    assert out["MapRunArn"] == run.map_run_arn
    assert out["ResultWriterDetails"] == {"Bucket": RESULTS, "Key": run.manifest_key}
    assert run.manifest_key.startswith("bulk-results/") and run.manifest_key.endswith("/manifest.json")

    manifest, executions = _read_results(s3, run.manifest_key)
    assert manifest["DestinationBucket"] == RESULTS and manifest["MapRunArn"] == run.map_run_arn
    assert manifest["ResultFiles"]["FAILED"] == []
    assert len(executions) == len(run.batches)
    records = [r for e in executions for r in json.loads(e["Output"])]
    by_source = {r["source"]: r for r in records}
    assert len(by_source) == len(records) == N_IMAGES + len(s3_env["others"])
    for key in s3_env["images"]:
        rec = by_source[f"s3://{BUCKET}/{key}"]
        assert "error" not in rec, rec
        assert rec["pose"] in rec["probabilities"] and len(rec["probabilities"]) == 6
    for key in s3_env["others"]:
        assert by_source[f"s3://{BUCKET}/{key}"]["error"]["code"] == "unsupported_media_type"
    assert not [s for s in by_source if s.endswith("/")]  # folder markers: no record
    # The records are the handler's own answers for those objects.
    sample = s3_env["images"][1234]
    direct = handler({"url": f"s3://{BUCKET}/{sample}"}, None)
    assert by_source[f"s3://{BUCKET}/{sample}"]["probabilities"] == direct


def test_the_tolerated_failure_rule_fails_the_run_only_past_the_threshold(handler, s3_env) -> None:
    s3 = client()

    def crash_on(batch_numbers: set[int]):
        seen = {"n": 0}

        def invoke(function: str, payload: Any) -> Any:
            seen["n"] += 1
            if seen["n"] in batch_numbers:
                raise RuntimeError("function error")  # the child execution fails
            return {"n": seen["n"]}  # the records are not under test here

        return invoke

    params = {**BULK, "ReadableBucket": BUCKET, "BulkBatchSize": "50"}
    # 2,509 items in 51 batches of 50: two failed batches are ~4 % (tolerated, default 5 %) ...
    sfn = DistributedMapHarness(definition_from_template(params, results_bucket=RESULTS), s3, crash_on({3, 20}))
    out = sfn.run({"bucket": BUCKET, "prefix": "shoot/"})
    assert sfn.map_run.failed_items == 100 and sfn.map_run.failed_batches == 2
    manifest, _ = _read_results(s3, out["ResultWriterDetails"]["Key"])
    (failed_file,) = manifest["ResultFiles"]["FAILED"]
    failed = json.loads(s3.get_object(Bucket=RESULTS, Key=failed_file["Key"])["Body"].read())
    assert [e["Status"] for e in failed] == ["FAILED"] * 2 and failed[0]["Error"] == "RuntimeError"
    # ... three are ~6 %: the run fails, after writing its results.
    sfn = DistributedMapHarness(definition_from_template(params, results_bucket=RESULTS), s3, crash_on({3, 9, 20}))
    with pytest.raises(ExecutionFailed) as info:
        sfn.run({"bucket": BUCKET, "prefix": "shoot/"})
    assert info.value.error == "States.ExceedToleratedFailureThreshold"
    # With 0 % tolerated, one failed batch is enough.
    params0 = {**params, "BulkToleratedFailurePercentage": "0"}
    sfn = DistributedMapHarness(definition_from_template(params0, results_bucket=RESULTS), s3, crash_on({1}))
    with pytest.raises(ExecutionFailed):
        sfn.run({"bucket": BUCKET, "prefix": "shoot/"})


def test_prefix_and_details_are_optional_and_bucket_is_required(s3_env) -> None:
    seen: list[Any] = []
    definition = definition_from_template({**BULK, "ReadableBucket": BUCKET, "BulkBatchSize": "50"},
                                          results_bucket=RESULTS)
    sfn = DistributedMapHarness(definition, client(), lambda f, p: seen.append(p) or [])
    sfn.run({"bucket": BUCKET, "details": True})  # no prefix: the whole bucket
    assert sfn.map_run.items == N_IMAGES + len(s3_env["markers"]) + len(s3_env["others"]) + 1
    assert {json.dumps(p["BatchInput"]) for p in seen} == {json.dumps({"bucket": BUCKET, "details": True})}
    sfn = DistributedMapHarness(definition, client(), lambda f, p: [])
    with pytest.raises(ExecutionFailed) as info:
        sfn.run({"prefix": "shoot/"})
    assert info.value.error == "States.Runtime"
