# The orchestrator image of a next release whose job workflow is deliberately incompatible with
# the running one's where a release may change it (the work done on the release queue): a timer
# before the first activity, not behind `workflow.patched`, so that replaying a run the previous
# release started fails with a non-determinism error.
ARG FROM_IMAGE
FROM ${FROM_IMAGE}
ARG NEXT_VERSION
USER 0
RUN site=/opt/bigeye/lib/python3.11/site-packages \
 && sed -i "s/^Version: .*/Version: ${NEXT_VERSION}/" $site/bigeye_agent_orchestrator-*.dist-info/METADATA \
 && sed -i 's/^\( *\)self._fast = workflow.patched(FEWER_ROUND_TRIPS)$/&\n\1await workflow.sleep(timedelta(milliseconds=1))  # INCOMPATIBLE/' \
      $site/workflows/agent_job.py \
 && grep -q "# INCOMPATIBLE" $site/workflows/agent_job.py \
 && find $site/workflows -name '__pycache__' -prune -exec rm -rf {} +
LABEL org.opencontainers.image.version="${NEXT_VERSION}"
USER 10001:10001
