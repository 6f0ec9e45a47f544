"""Run a command until our stdin reaches end of file, then stop it: `python3 -m
benchmarks.supervise COMMAND...`.

The harness starts Postfix and blackbox_exporter through this, holding the write end of the
supervisor's stdin. Closing it stops the service; so does the harness dying without cleaning up
(SIGKILL, a test timeout), because the kernel closes the pipe then. (PR_SET_PDEATHSIG would not
do: Postfix's master changes its effective uid at start, which clears it.) The first line on
stdout is the service's pid, for CPU accounting; the service's own output goes to stderr.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence


def supervise(command: Sequence[str]) -> int:
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sys.stderr)
    print(process.pid, flush=True)
    try:
        sys.stdin.buffer.read()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # Postfix's master passes it to its children
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    return process.wait()


def start(command: Sequence[str], *, log: str, cwd: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start `command` supervised; its output goes to the file `log`. Returns the supervisor
    and the service's pid."""
    with open(log, "wb") as output:  # noqa: PTH123 - the child keeps its own descriptor
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.supervise", *command],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=output,
            start_new_session=True,
        )
    assert supervisor.stdout is not None
    return supervisor, int(supervisor.stdout.readline())


def stop(supervisor: subprocess.Popen[bytes], timeout: float = 15) -> None:
    assert supervisor.stdin is not None
    supervisor.stdin.close()
    try:
        supervisor.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        supervisor.kill()
        supervisor.wait()
    if supervisor.stdout is not None:
        supervisor.stdout.close()


if __name__ == "__main__":
    raise SystemExit(supervise(sys.argv[1:]))
