"""The one reader of the files an operator names (configuration, trust stores, certificates and
keys, the canary's password): regular files only, and never more than a bound read.

`/dev/zero` as a password file was read whole before it was cut (a 24 GiB machine ran out of
memory), and a FIFO blocks whoever opens it; so the file is opened without blocking, refused
unless it is a regular file, refused when its size is over the bound, and read up to the bound
plus one byte (a file that grows while it is read is refused too). `check` does the same
without reading, for the few files OpenSSL must open itself by name (the web port's certificate
and key). Every failure is one `FileError`, whose message fits after the key that named the
file and never quotes its content.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_PEM_BYTES = 1 << 20
"""A certificate chain or private key file (a CA bundle has `bundle.MAX_BUNDLE_BYTES`)."""

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


class FileError(ValueError):
    """A file that cannot be read within its bound. `message` names no file (it follows a key
    path or the file's name: "not a regular file"); `str()` starts with the path."""

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = str(path)
        self.message = message


def read(path: str | Path, limit: int) -> bytes:
    """The whole content of the regular file `path`, at most `limit` bytes, else FileError."""
    data = _read(_open(path, limit), path, limit + 1)
    if len(data) > limit:
        raise FileError(path, f"larger than {size(limit)}")
    return data


def read_head(path: str | Path, limit: int) -> bytes:
    """The first `limit` bytes of the regular file `path` (for a file whose rest may be
    ignored, such as the hosts file); anything but a readable regular file is a FileError."""
    return _read(_open(path, None), path, limit)


def _read(fd: int, path: str | Path, most: int) -> bytes:
    try:
        chunks: list[bytes] = []
        left = most
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise FileError(path, f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def check(path: str | Path, limit: int | None) -> None:
    """What `read` checks (a regular file, readable, within `limit` unless None), reading
    nothing."""
    os.close(_open(path, limit))


def _open(path: str | Path, limit: int | None) -> int:
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        raise FileError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileError(path, "not a regular file")
        if limit is not None and info.st_size > limit:
            raise FileError(path, f"larger than {size(limit)}")
        os.set_blocking(fd, True)
    except OSError as exc:
        os.close(fd)
        raise FileError(path, f"cannot read: {exc.strerror or exc}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def size(limit: int) -> str:
    """A bound as people write it: 1 MiB, 64 KiB, 100 bytes."""
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if limit >= 1 << shift and limit % (1 << shift) == 0:
            return f"{limit >> shift} {unit}"
    return f"{limit} bytes"
