"""The local cloud's web UI: the pages a Bigeye user sees (Hosts, Jobs, Run).

Server-rendered HTML behind the admin API key (a login form and a server-side session), served
by the HTTP API's own application under `/ui/`. Every page also answers
`Accept: application/json` with the data the CLI's `--json` prints, read by the same functions.
"""
