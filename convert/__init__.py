"""Training, conversion and evaluation of the yoga-pose model (TensorFlow side only).

Nothing here is imported by the Lambda runtime; this package may import ``yogapose`` for
the shared preprocessing and metadata, never the other way round.
"""
