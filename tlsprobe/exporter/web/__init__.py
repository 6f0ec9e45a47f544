"""The HTTP side of `tlsprobe serve`: the aiohttp server and the thread it runs on, the
connection guard, basic-auth gate, `/probe` allowlist and probe limiter."""
