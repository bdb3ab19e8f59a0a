"""localtools.context.LambdaContext: the one stand-in, read by Powertools as Lambda's own."""

from __future__ import annotations

import time

from aws_lambda_powertools.logging.lambda_context import build_lambda_context_model

from localtools.context import LambdaContext


def test_powertools_reads_every_field_it_needs() -> None:
    ctx = LambdaContext("req-1", function_name="fn", memory_limit_in_mb=3008, environ={"AWS_REGION": "eu-west-1"})
    model = build_lambda_context_model(ctx)
    assert model.function_request_id == "req-1"
    assert model.function_name == "fn"
    assert model.function_memory_size == 3008
    assert model.function_arn == "arn:aws:lambda:eu-west-1:000000000000:function:fn"


def test_defaults_follow_the_lambda_environment_variables() -> None:
    ctx = LambdaContext(environ={"AWS_LAMBDA_FUNCTION_NAME": "yp", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048"})
    assert (ctx.function_name, ctx.memory_limit_in_mb) == ("yp", 2048)
    assert len(ctx.aws_request_id) == 36  # a fresh uuid per invocation
    assert LambdaContext(environ={}).memory_limit_in_mb == 1769


def test_remaining_time_counts_down_from_the_timeout() -> None:
    ctx = LambdaContext(timeout_s=0.2)
    assert 0 < ctx.get_remaining_time_in_millis() <= 200
    time.sleep(0.25)
    assert ctx.get_remaining_time_in_millis() == 0
