"""Certificates: facts read from DER (`facts`, with the lenient reader `der`), readability,
CA bundles, trust building and evaluation, Exchange Online name matching (`o365`) and the
byte-bounded cache the evaluation shares. No sockets: pure functions of bytes and a clock."""
