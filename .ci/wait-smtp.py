"""Wait (up to 20 s) until an SMTP server greets on HOST PORT; used by the .ci Postfix scripts.

A reload or start replaces Postfix's listener asynchronously, so the scripts wait for a 220.
"""

import socket
import sys
import time

host, port = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 20
while True:
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            banner = sock.makefile("rb").readline()
            if banner.startswith(b"220 "):
                print(f"{host}:{port} answers: {banner.decode().strip()}")
                sock.sendall(b"QUIT\r\n")
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"no SMTP greeting on {host}:{port}")
    time.sleep(0.2)
