"""Writing a file atomically: a reader never sees half of it, and a write that fails (a read-only
folder, a full disk) leaves no temporary file behind and raises one sentence naming the file."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from simtune.errors import OutputError

WRITE_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                          errno.EISDIR, errno.EEXIST})
"""Causes of a failed write that are the place's fault, not simtune's: said in one sentence."""


def unwritable(path: str | os.PathLike, exc: OSError) -> OutputError:
    """The one-sentence error for ``path`` that could not be written because of ``exc``."""
    cause = exc.strerror or str(exc)
    return OutputError(f"{os.fspath(path)} cannot be written: {cause[0].lower()}{cause[1:]}.")


def write_atomically(path: str | os.PathLike, content: str | bytes, mode: int = 0o644) -> Path:
    """Write ``content`` to a temporary file beside ``path`` and rename it over ``path``."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise unwritable(path, exc) from None
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise unwritable(path, exc) from None
    return path
