"""TEST HARNESS standing in for AWS Step Functions: never product code, never deployed.

It walks the bulk state machine's own definition, read from ``template.yaml``, the way the
Step Functions service runs a *Distributed Map* (as documented), so the end-to-end test
exercises the real definition, the real S3 protocol (moto's server) and the real handler:

* ``Pass`` states with ``Parameters`` (``.$`` JSONPath fields, ``States.StringToJson`` and
  ``States.JsonMerge``);
* the ``Map`` state's ``ItemReader`` (``arn:aws:states:::s3:listObjectsV2``, every page of
  the listing, items shaped ``{"Key", "Size", "Etag", "LastModified", "StorageClass"}``),
  ``ItemBatcher`` (``MaxItemsPerBatch[Path]``, ``BatchInput``), the item processor's
  ``lambda:invoke`` task (``Payload.$``, ``OutputPath``, ``Retry`` on named errors), the
  tolerated-failure rule (``ToleratedFailurePercentage[Path]``: the run fails when more than
  that share of the items are in failed child executions) and ``ResultWriter``
  (``<Prefix>/<map run id>/manifest.json`` + ``SUCCEEDED_0.json`` / ``FAILED_0.json``).

Batches run one after another (``MaxConcurrency`` is read and reported, not simulated): the
handler shares one LiteRT interpreter per process, as one Lambda instance does.
Only the subset of ASL this definition uses is implemented; anything else raises.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"
STATE_MACHINE = "BulkStateMachine"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:yoga-pose"
STATE_MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:yoga-bulk"


class HarnessError(Exception):
    """The definition uses something this harness does not implement."""


class ExecutionFailed(Exception):
    """The state machine execution failed (``error`` is the Step Functions error name)."""

    def __init__(self, error: str, cause: str) -> None:
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


class LambdaServiceError(Exception):
    """What an invoke raises for a platform error (``name`` as in ``Lambda.ServiceException``)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


# ------------------------------------------------------------------------- the definition


def definition_from_template(params: dict[str, str] | None = None, results_bucket: str = "results-bucket",
                             template: Path = TEMPLATE) -> dict:
    """The ASL of :data:`STATE_MACHINE` as CloudFormation would deploy it for ``params``.

    Parameters, conditions and ``!Sub`` resolve as in ``tests/system/test_template.py``;
    ``!GetAtt PoseFunction.Arn`` becomes :data:`FUNCTION_ARN` and ``!Ref BulkResultsBucket``
    ``results_bucket`` (what the deployed stack substitutes).
    """
    from samtranslator.yaml_helper import yaml_parse

    from tests.system.test_template import Evaluator

    doc = yaml_parse(template.read_text())
    definition = doc["Resources"][STATE_MACHINE]["Properties"]["Definition"]

    def stand_ins(node: Any) -> Any:
        if isinstance(node, list):
            return [stand_ins(n) for n in node]
        if not isinstance(node, dict):
            return node
        if node == {"Fn::GetAtt": ["PoseFunction", "Arn"]} or node == {"Fn::GetAtt": "PoseFunction.Arn"}:
            return FUNCTION_ARN
        if node == {"Ref": "BulkResultsBucket"}:
            return results_bucket
        return {k: stand_ins(v) for k, v in node.items()}

    resolved = Evaluator(doc, dict(params or {})).resolve(stand_ins(copy.deepcopy(definition)))
    leftovers = [m for m in re.findall(r'"(Fn::\w+|Ref)"', json.dumps(resolved))]
    if leftovers:
        raise HarnessError(f"unresolved intrinsics in the definition: {sorted(set(leftovers))}")
    return resolved


# ------------------------------------------------------------------------- JSONPath subset


def _path(data: Any, path: str) -> Any:
    """``$`` or ``$.a.b`` (the reference paths this definition uses)."""
    if path == "$":
        return data
    if not path.startswith("$."):
        raise HarnessError(f"unsupported path {path!r}")
    for part in path[2:].split("."):
        if not isinstance(data, dict) or part not in data:
            raise ExecutionFailed("States.Runtime", f"the JSONPath {path!r} could not be found in the input")
        data = data[part]
    return data


def _parameters(template: Any, data: Any) -> Any:
    """Apply a ``Parameters``-style template: ``key.$`` fields are paths or intrinsics."""
    if isinstance(template, list):
        return [_parameters(t, data) for t in template]
    if not isinstance(template, dict):
        return template
    out = {}
    for key, value in template.items():
        if key.endswith(".$"):
            out[key[:-2]] = _intrinsic(value, data) if value.startswith("States.") else _path(data, value)
        else:
            out[key] = _parameters(value, data)
    return out


def _intrinsic(text: str, data: Any) -> Any:
    """Evaluate ``States.StringToJson`` / ``States.JsonMerge`` calls (nested), whose arguments
    are string literals (``'...'`` with ``\\`` escapes), paths, booleans, numbers or calls."""
    value, end = _expr(text, 0, data)
    if end != len(text):
        raise HarnessError(f"cannot parse intrinsic {text!r}")
    return value


def _expr(text: str, i: int, data: Any) -> tuple[Any, int]:
    while text[i] == " ":
        i += 1
    if text[i] == "'":
        out, i = [], i + 1
        while text[i] != "'":
            if text[i] == "\\":
                i += 1
            out.append(text[i])
            i += 1
        return "".join(out), i + 1
    match = re.compile(r"States\.(\w+)\(").match(text, i)
    if match:
        args, i = [], match.end()
        while True:
            arg, i = _expr(text, i, data)
            args.append(arg)
            while text[i] == " ":
                i += 1
            if text[i] == ")":
                return _call(match.group(1), args), i + 1
            if text[i] != ",":
                raise HarnessError(f"cannot parse intrinsic {text!r} at {i}")
            i += 1
    token = re.compile(r"[^,) ]+").match(text, i)
    if token is None:
        raise HarnessError(f"cannot parse intrinsic {text!r} at {i}")
    word = token.group(0)
    if word.startswith("$"):
        return _path(data, word), token.end()
    return json.loads(word), token.end()  # true, false, null, numbers


def _call(name: str, args: list[Any]) -> Any:
    if name == "StringToJson" and len(args) == 1 and isinstance(args[0], str):
        return json.loads(args[0])
    if name == "JsonMerge" and len(args) == 3 and args[2] is False:
        if not (isinstance(args[0], dict) and isinstance(args[1], dict)):
            raise ExecutionFailed("States.Runtime", "States.JsonMerge needs two JSON objects")
        return {**args[0], **args[1]}  # shallow: the second object's keys win
    raise HarnessError(f"intrinsic States.{name} with {args!r} is not implemented")


def _number(state: dict, name: str, data: Any, default: Any = None) -> Any:
    if name in state:
        return state[name]
    if f"{name}Path" in state:
        value = _path(data, state[f"{name}Path"])
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ExecutionFailed("States.Runtime", f"{name}Path must select a number, got {value!r}")
        return value
    return default


# ------------------------------------------------------------------------- the run


@dataclass
class MapRun:
    """What the harness saw of the one Distributed Map run (for the test's assertions)."""

    map_run_arn: str = ""
    list_pages: int = 0
    items: int = 0
    batches: list[dict] = field(default_factory=list)
    failed_batches: int = 0
    failed_items: int = 0
    max_concurrency: Any = None
    tolerated_failure_percentage: Any = None
    result_files: dict[str, list[dict]] = field(default_factory=dict)
    manifest_key: str = ""


class DistributedMapHarness:
    """Run a definition: ``run(input)`` -> the execution's output (or ExecutionFailed).

    ``s3`` is a boto3 S3 client (ItemReader listing, ResultWriter files); ``invoke(function,
    payload)`` calls the function with a JSON payload and returns its JSON answer, raising
    :class:`LambdaServiceError` for platform errors (``Retry``) and any other exception for a
    function error (the child execution fails).
    """

    def __init__(self, definition: dict, s3: Any, invoke: Callable[[str, Any], Any]) -> None:
        self.definition, self.s3, self.invoke = definition, s3, invoke
        self.map_run = MapRun()
        self.sleeps: list[float] = []  # Retry intervals that would have been waited

    def run(self, execution_input: Any) -> Any:
        states = self.definition["States"]
        name, data = self.definition["StartAt"], execution_input
        for _ in range(100):
            state = states[name]
            kind = state["Type"]
            if kind == "Pass":
                data = _parameters(state["Parameters"], data) if "Parameters" in state else data
            elif kind == "Map":
                data = self._distributed_map(state, data)
            else:
                raise HarnessError(f"state type {kind} is not implemented")
            if state.get("End"):
                return data
            name = state["Next"]
        raise HarnessError("too many state transitions")

    # -------------------------------------------------------------------- Map

    def _distributed_map(self, state: dict, data: Any) -> Any:
        processor = state["ItemProcessor"]
        if processor.get("ProcessorConfig", {}).get("Mode") != "DISTRIBUTED":
            raise HarnessError("only a DISTRIBUTED Map is implemented")
        run = self.map_run
        run.map_run_arn = f"{STATE_MACHINE_ARN.replace(':stateMachine:', ':mapRun:')}/Map:{uuid.uuid4()}"
        run.max_concurrency = _number(state, "MaxConcurrency", data, 0)
        run.tolerated_failure_percentage = _number(state, "ToleratedFailurePercentage", data, 0)
        items = self._read_items(state["ItemReader"], data)
        run.items = len(items)
        batcher = state.get("ItemBatcher")
        if batcher is None:
            raise HarnessError("only batched item processing (ItemBatcher) is implemented")
        size = int(_number(batcher, "MaxItemsPerBatch", data, 0) or len(items) or 1)
        batch_input = _parameters(batcher.get("BatchInput", {}), data)
        executions: list[dict] = []
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            child_input = {"Items": chunk, "BatchInput": batch_input}
            run.batches.append(child_input)
            executions.append(self._child_execution(processor, child_input, len(run.batches)))
            if executions[-1]["Status"] == "FAILED":
                run.failed_batches += 1
                run.failed_items += len(chunk)
        manifest = self._write_results(state.get("ResultWriter"), executions)
        if run.items and 100.0 * run.failed_items / run.items > run.tolerated_failure_percentage:
            raise ExecutionFailed(
                "States.ExceedToleratedFailureThreshold",
                f"{run.failed_items} of {run.items} items failed, over "
                f"{run.tolerated_failure_percentage}%",
            )
        if manifest is None:
            return [json.loads(e["Output"]) for e in executions]
        return {"MapRunArn": run.map_run_arn, "ResultWriterDetails": manifest}

    def _read_items(self, reader: dict, data: Any) -> list[dict]:
        if reader.get("Resource") != "arn:aws:states:::s3:listObjectsV2":
            raise HarnessError(f"ItemReader {reader.get('Resource')} is not implemented")
        params = _parameters(reader.get("Parameters", {}), data)
        kwargs = {"Bucket": params["Bucket"], "Prefix": params.get("Prefix", "")}
        items: list[dict] = []
        token = None
        while True:  # ListObjectsV2 pages (at most 1,000 keys each), as the service walks them
            page = self.s3.list_objects_v2(**kwargs, **({"ContinuationToken": token} if token else {}))
            self.map_run.list_pages += 1
            for obj in page.get("Contents", []):
                items.append({
                    "Etag": obj["ETag"],
                    "Key": obj["Key"],
                    "LastModified": int(obj["LastModified"].timestamp()),
                    "Size": obj["Size"],
                    "StorageClass": obj.get("StorageClass", "STANDARD"),
                })
            if not page.get("IsTruncated"):
                return items
            token = page["NextContinuationToken"]

    def _child_execution(self, processor: dict, child_input: dict, n: int) -> dict:
        started = datetime.now(UTC)
        status, output, error, cause = "SUCCEEDED", None, None, None
        try:
            output = self._run_processor(processor, child_input)
        except Exception as exc:  # noqa: BLE001 - the child execution fails, the map goes on
            status = "FAILED"
            error = getattr(exc, "error", None) or getattr(exc, "name", None) or type(exc).__name__
            cause = str(exc)[:500]
        entry = {
            "ExecutionArn": f"{STATE_MACHINE_ARN.replace(':stateMachine:', ':express:')}/child/{n}",
            "Input": json.dumps(child_input),
            "InputDetails": {"Included": True},
            "Name": f"child-{n}",
            "StartDate": started.isoformat(),
            "StateMachineArn": STATE_MACHINE_ARN,
            "Status": status,
            "StopDate": datetime.now(UTC).isoformat(),
        }
        if status == "SUCCEEDED":
            entry |= {"Output": json.dumps(output), "OutputDetails": {"Included": True}}
        else:
            entry |= {"Error": error, "Cause": cause}
        return entry

    def _run_processor(self, processor: dict, data: Any) -> Any:
        states = processor["States"]
        name = processor["StartAt"]
        while True:
            state = states[name]
            if state["Type"] != "Task" or state.get("Resource") != "arn:aws:states:::lambda:invoke":
                raise HarnessError("only lambda:invoke Task states are implemented in the processor")
            params = _parameters(state["Parameters"], data)
            result = self._invoke_with_retry(state, params["FunctionName"], params["Payload"])
            data = _path({"Payload": result, "StatusCode": 200}, state.get("OutputPath", "$"))
            if state.get("End"):
                return data
            name = state["Next"]

    def _invoke_with_retry(self, state: dict, function: str, payload: Any) -> Any:
        attempts: dict[int, int] = {}
        while True:
            try:
                # Lambda sees the payload as JSON text, and so does its answer travel back.
                return json.loads(json.dumps(self.invoke(function, json.loads(json.dumps(payload)))))
            except LambdaServiceError as exc:
                for i, rule in enumerate(state.get("Retry", [])):
                    if f"Lambda.{exc.name}" in rule["ErrorEquals"] or "States.ALL" in rule["ErrorEquals"]:
                        attempts[i] = attempts.get(i, 0) + 1
                        if attempts[i] <= rule.get("MaxAttempts", 3):
                            wait = rule.get("IntervalSeconds", 1) * rule.get("BackoffRate", 2.0) ** (attempts[i] - 1)
                            self.sleeps.append(wait)
                            break
                else:
                    raise
                continue

    # -------------------------------------------------------------------- ResultWriter

    def _write_results(self, writer: dict | None, executions: list[dict]) -> dict | None:
        if writer is None:
            return None
        if writer.get("Resource") != "arn:aws:states:::s3:putObject":
            raise HarnessError(f"ResultWriter {writer.get('Resource')} is not implemented")
        params = writer["Parameters"]
        bucket, prefix = params["Bucket"], params.get("Prefix", "")
        run_id = self.map_run.map_run_arn.rsplit(":", 1)[1]
        base = f"{prefix}/{run_id}" if prefix else run_id
        files: dict[str, list[dict]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
        for status in ("SUCCEEDED", "FAILED"):
            chosen = [e for e in executions if e["Status"] == status]
            if chosen:
                key = f"{base}/{status}_0.json"
                body = json.dumps(chosen).encode("utf-8")
                self.s3.put_object(Bucket=bucket, Key=key, Body=body)
                files[status].append({"Key": key, "Size": len(body)})
        manifest = {"DestinationBucket": bucket, "MapRunArn": self.map_run.map_run_arn, "ResultFiles": files}
        manifest_key = f"{base}/manifest.json"
        self.s3.put_object(Bucket=bucket, Key=manifest_key, Body=json.dumps(manifest).encode("utf-8"))
        self.map_run.result_files = files
        self.map_run.manifest_key = manifest_key
        return {"Bucket": bucket, "Key": manifest_key}
