"""The docker-socket-proxy: an allowlisting HTTP proxy in front of the Docker engine's socket.

It admits exactly the Docker API calls the orchestrator makes (design §6) and checks container
create bodies with the orchestrator's own policy (`orchestrator.policy`). See
`deploy/socket-proxy/README.md`.
"""
