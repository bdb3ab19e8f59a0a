"""AWS Lambda entry point: ``lambda_function.lambda_handler`` (the image's CMD).

Importing this module is the Lambda init phase: settings are read, the model is loaded,
checked against its metadata and warmed up once per execution environment. Everything
else lives in the ``yogapose`` package.
"""

from typing import Any

from yogapose.app import get_app, handle_event
from yogapose.observability import instrument

get_app()

_instrumented = instrument(handle_event)


def lambda_handler(event: Any, context: Any = None) -> Any:
    """Answer one event; the README's "The API" has every shape.

    * A direct invoke: ``{"url": ...}``, ``{"image": <base64>}``, ``{"urls": [...]}`` or
      ``{"images": [...]}``, optionally ``"details": True`` -> the six ``{label: probability}``
      (or the detailed answer, or a list of them); a bad request raises a
      ``yogapose.errors.PoseError`` subclass (its ``code`` is stable).
    * A Function URL or API Gateway request -> an HTTP response dict (errors as JSON).
    * A Step Functions map batch or an S3 upload notification -> one record per object.

    ``context`` is Lambda's; from ipython, ``None`` (the request then has the function's
    default time budget, 13.5 s).
    """
    return _instrumented(event, context)
