"""AWS Lambda entry point: ``lambda_function.lambda_handler`` (the image's CMD).

Importing this module is the Lambda init phase: settings are read, the model is loaded,
checked against its metadata and warmed up once per execution environment. Everything
else lives in the ``yogapose`` package.
"""

from yogapose.app import get_app, handle_event
from yogapose.observability import instrument

get_app()

lambda_handler = instrument(handle_event)
