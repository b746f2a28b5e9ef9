"""Writing cache and state files so that concurrent processes never see, or clobber, half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` into a private temporary file beside `path`, then rename it over `path`: a reader
    sees the previous file or the new one, and processes writing the same path at once (servers
    filling a shared cache) each finish with a whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
