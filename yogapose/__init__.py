"""Serverless yoga-pose classifier: the serving package.

Data flows one way: ``edge`` (event shapes, HTTP) -> ``fetch`` (bytes from URL/S3/body)
-> ``imaging`` (decode + preprocess) -> ``runtime`` (LiteRT inference) -> ``edge``.
Training and conversion live in ``convert/`` and only meet this package through the model
metadata file (``yogapose.metadata``) and the shared preprocessing (``yogapose.imaging``).
"""

__version__ = "1.0.0"
