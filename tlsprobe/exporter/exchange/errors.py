"""The one error an unusable export becomes."""

from __future__ import annotations


class ExportError(ValueError):
    """An export that cannot be used; `str()` is one line naming file, record and property."""

    def __init__(self, file: str, message: str, record: str = "", prop: str = "") -> None:
        super().__init__(message)
        self.file, self.record, self.prop, self.message = file, record, prop, message

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.file, self.record, self.prop) if part)
        return f"{where}: {self.message}"
