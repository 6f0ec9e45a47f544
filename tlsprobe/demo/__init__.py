"""`tlsprobe demo`: a throwaway PKI, loopback SMTP servers and the exporter watching them.

Only `tlsprobe.cli` imports this package.
"""
