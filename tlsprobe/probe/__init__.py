"""The probe engine: everything needed to probe one SMTP endpoint and judge what it sent.

`prober` ties the parts together for one endpoint and `policies` adds its DNS policies; `names`
is the one host-name rule and `software` names the mail server that answered. The parts:
`smtp` (the SMTP dialogues, sans-IO), `transport` (the probe's socket and TLS connection),
`x509` (certificate facts, trust and every verdict), `dns` (MX discovery, DNSSEC, DANE,
MTA-STS) and `send` (the receiver, the session verdict and the canary). Nothing here imports
`tlsprobe.exporter`, `tlsprobe.cli` or `tlsprobe.demo`; import-linter enforces that and the
layers between the sub-packages (pyproject.toml, docs/architecture.md).
"""
