"""What the tests expect of every result, spelt out once (not derived from the code under test).

`SERVER_CHECKS`: the checks of a healthy server probe without a pinned certificate and without
DNS policies, in report order. `REPORT_CHAIN_KEYS`: what the JSON report gives of each
certificate of the chain. `PROCESS_SERIES`: what /metrics must carry of the exporter's own
process (every client_python exporter has them).
"""

from __future__ import annotations

SERVER_CHECKS = (
    "starttls",
    "tls_version",
    "chain_trusted",
    "not_expired",
    "hostname",
    "certificate_domain",
    "accepted_domain",
    "key_strength",
    "signature_algorithm",
)

REPORT_CHAIN_KEYS = frozenset(
    {
        "subject",
        "issuer",
        "serial",
        "not_before",
        "not_after",
        "sha256",
        "dns_names",
        "key",
        "signature_algorithm",
    }
)

PROCESS_SERIES = (
    "process_open_fds",
    "process_max_fds",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_cpu_seconds_total",
    "process_start_time_seconds",
)
