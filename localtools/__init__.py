"""Local developer tools: the CLI, the Lambda emulator launcher and the local Function URL server.

They import the serving package (``yogapose``) but are never copied into the Lambda image
(``.dockerignore`` keeps ``localtools/`` out of the build context).
"""
