# The orchestrator image of a next release, for the upgrade test: the same code under another
# version (the installed distribution's metadata and the image's label both say it).
ARG FROM_IMAGE
FROM ${FROM_IMAGE}
ARG NEXT_VERSION
USER 0
RUN sed -i "s/^Version: .*/Version: ${NEXT_VERSION}/" \
      /opt/bigeye/lib/python3.11/site-packages/bigeye_agent_orchestrator-*.dist-info/METADATA
LABEL org.opencontainers.image.version="${NEXT_VERSION}"
USER 10001:10001
