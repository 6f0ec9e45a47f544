"""The exporter: `tlsprobe serve`, which drives `tlsprobe.probe` on a schedule and publishes.

The running parts sit at the top (`app`, `scheduler`, `senders`, `dnspolicies`, `results`,
`lastresults`) and publish the values of `state`; the sub-packages hold the rest: `config` (the
configuration files to frozen values), `web` (the HTTP server and its guards), `exposition`
(/metrics and /probe), `pages` (the HTML pages) and `history` (the drift history on disk). It
never imports `tlsprobe.cli` or `tlsprobe.demo`; import-linter enforces that and the rules
between the sub-packages (pyproject.toml, docs/architecture.md).
"""
