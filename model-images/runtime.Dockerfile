# The inference runtime: Python 3.11, the locked ctr-inference environment in
# /opt/ctr/venv, and a non-root user. `ctr image runtime` (`make runtime-image`)
# builds it with buildah from a context that the host prepares, so no step
# here reaches the network:
#   wheels/  the wheels of ctr-inference's locked dependencies and of its
#            compiled extra (lleaves, llvmlite) from uv.lock, requirements.txt with their SHA-256 hashes, a pip wheel, and
#            the ctr-inference wheel built from this checkout
#   debs/    Debian packages the wheels link against (libgomp1 for LightGBM)
# BASE_IMAGE is the debootstrap base from `make base-image` on machines
# without a registry, and python:3.11-slim-bookworm pinned by digest in CI.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

# The builder creates the virtual environment. pip runs from its wheel, so
# the final image gets no pip, no wheels and no package caches. Bytecode is
# compiled with unchecked hashes, which stay valid whatever file times the
# layers carry, so the read-only venv never needs recompiling.
FROM ${BASE_IMAGE} AS builder
COPY wheels/ /tmp/wheels/
RUN set -eu; \
    set -- /tmp/wheels/pip-*.whl; \
    python3 -m venv --without-pip /opt/ctr/venv; \
    /opt/ctr/venv/bin/python "$1/pip" install --no-cache-dir --no-index --find-links /tmp/wheels \
        --require-hashes --no-deps --no-compile -r /tmp/wheels/requirements.txt; \
    /opt/ctr/venv/bin/python "$1/pip" install --no-cache-dir --no-index --no-deps --no-compile \
        /tmp/wheels/ctr_inference-*.whl; \
    /opt/ctr/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash /opt/ctr/venv/lib

# The final stage: the shared libraries, the worker's user and the venv.
FROM ${BASE_IMAGE}
COPY debs/ /tmp/debs/
RUN dpkg --install /tmp/debs/*.deb \
    && rm -rf /tmp/debs \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ctr
COPY --from=builder /opt/ctr/venv /opt/ctr/venv
ENV PATH=/opt/ctr/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric user lets Kubernetes check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
ENTRYPOINT ["/opt/ctr/venv/bin/ctr-worker"]
