# The orchestrator image: `bigeye-orchestrator run` as a non-root user on a read-only root.
# Every base is a build ARG so that machines without registry access can build from a local
# base (deploy/base/build-local-base.sh). Dependencies come from wheels built on the host into
# .wheels/ (deploy/build-images.sh): the build itself needs no network.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
COPY .wheels/ /wheels/
RUN python3 -m venv /opt/bigeye \
 && /opt/bigeye/bin/pip install --no-cache-dir --no-index --find-links /wheels \
      bigeye-agent-orchestrator \
 && /opt/bigeye/bin/pip uninstall -y -q pip setuptools wheel 2>/dev/null || true \
 && find /opt/bigeye -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/bigeye/bin/python -m compileall -q /opt/bigeye/lib >/dev/null

FROM ${BASE_IMAGE}
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="bigeye-agent-orchestrator" \
      org.opencontainers.image.description="Runs Bigeye batch agent jobs dispatched over Temporal" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/bigeyedata/agent-orchestrator"
COPY --from=build /opt/bigeye /opt/bigeye
ENV PATH=/opt/bigeye/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BIGEYE_HEALTH_ADDR=0.0.0.0:9464 \
    BIGEYE_LOG_FORMAT=json \
    HOME=/tmp
# Any uid works (the compose file runs it as the host directory's owner); this is the default.
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["bigeye-orchestrator", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["bigeye-orchestrator"]
CMD ["run"]
