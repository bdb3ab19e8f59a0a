#!/bin/sh
# Stand-in for /lambda-entrypoint.sh of public.ecr.aws/lambda/python:3.12, same contract:
# the one argument is the handler (the image's CMD). Outside Lambda (no
# AWS_LAMBDA_RUNTIME_API) the runtime interface emulator fronts the runtime client,
# exactly like `docker run -p 8080:8080 <image>` on the real base.
if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" 1>&2
  exit 142
fi
export _HANDLER="$1"

RUNTIME_ENTRYPOINT=/var/runtime/bootstrap
if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
  # Stand-in only: STANDIN_RIE_ARGS (word-split on purpose) moves the emulator's ports
  # (0.0.0.0:8080 and its Runtime API on 127.0.0.1:9001) to free loopback ports, since
  # the chroot shares this host's network. Unset, this behaves exactly like AWS's script.
  # shellcheck disable=SC2086
  exec /usr/local/bin/aws-lambda-rie $STANDIN_RIE_ARGS "$RUNTIME_ENTRYPOINT"
else
  exec "$RUNTIME_ENTRYPOINT"
fi
