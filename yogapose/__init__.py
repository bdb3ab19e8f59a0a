"""Serverless yoga-pose classifier: the serving package.

Data flows one way: ``edge`` (event shapes, HTTP) -> ``fetch`` (bytes from URL/S3/body)
-> ``preprocess`` (``imaging`` decodes; ``person`` finds the people, each cropped and
resized) -> ``runtime`` (LiteRT inference) -> ``answer`` (probabilities and the open-set
verdict) -> ``edge``. Training and conversion live in ``convert/`` and only meet this
package through the model metadata file (``yogapose.metadata``) and the shared
preprocessing (``yogapose.preprocess.Preprocessor``).
"""

__version__ = "1.0.0"
