"""The probe engine: everything needed to probe one SMTP endpoint and judge what it sent.

The sans-IO SMTP client (`smtp`), the only socket code of the probe side (`transport`),
certificate facts (`certs`), trust building and evaluation (`evaluate`), Exchange Online
matching (`o365`), DNS expansion (`discover`) and the function that ties them together for one
endpoint (`prober`). Nothing here imports `tlsprobe.exporter`, `tlsprobe.cli` or
`tlsprobe.demo`; import-linter enforces that (pyproject.toml).
"""
