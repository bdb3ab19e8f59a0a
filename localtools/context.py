"""The one stand-in for Lambda's context object, for the local server, tests and the bench.

It has the attributes awslambdaric's ``LambdaContext`` has and Powertools reads
(``function_name``, ``memory_limit_in_mb``, ``invoked_function_arn``, ``aws_request_id``,
``get_remaining_time_in_millis()``), with local values. Lives in ``localtools/`` so it
never ships in the image, where Lambda passes the real one.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping

from yogapose.deadline import FUNCTION_TIMEOUT_S


class LambdaContext:
    """Lambda's context for one invocation; the deadline starts counting at construction."""

    def __init__(self, aws_request_id: str | None = None, *, function_name: str | None = None,
                 memory_limit_in_mb: int | None = None, timeout_s: float = FUNCTION_TIMEOUT_S,
                 environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        region = env.get("AWS_REGION", "us-east-1")
        self.aws_request_id = aws_request_id or str(uuid.uuid4())
        self.function_name = function_name or env.get("AWS_LAMBDA_FUNCTION_NAME", "yoga-pose-local")
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:000000000000:function:{self.function_name}"
        # awslambdaric gives the memory size in MB (an int), under this name.
        self.memory_limit_in_mb = (memory_limit_in_mb if memory_limit_in_mb is not None
                                   else int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769")))
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
