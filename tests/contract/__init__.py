"""Contract tests: the handler's events, responses and errors as clients see them (also through the
local server and S3)."""
