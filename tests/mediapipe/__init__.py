"""MediaPipe's own pipeline as a reference for yogapose.person, in a side venv (dev only).

``env`` builds the venv (``.tools/mediapipe-venv``, git-ignored, cached), ``worker`` runs
inside it. Nothing here is imported by the serving code, installed by the Pipfile, or
copied into the image.
"""
