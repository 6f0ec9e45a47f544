"""The exporter: configuration, scheduling, results, history, metrics and the HTTP server.

It drives `tlsprobe.probe` on a schedule and publishes what it finds. It never imports
`tlsprobe.cli` or `tlsprobe.demo`; import-linter enforces that (pyproject.toml).
"""
