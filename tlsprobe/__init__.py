"""tlsprobe: watch the TLS certificates of SMTP servers that relay through Exchange Online."""

__version__ = "0.1.0"
