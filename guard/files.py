"""Disk caches and state files: their keys, and writes that concurrent processes never see, or
clobber, half of."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def cache_key(*parts) -> str:
    """16 hex digits naming what `parts` (JSON values) describe: a disk cache entry's key."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def file_sha256(path) -> str:
    """The SHA-256 of a file (a path, or a package resource), read in blocks."""
    digest = hashlib.sha256()
    with (Path(path) if isinstance(path, str) else path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def write_folder_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` into a private temporary folder beside `path`, then rename it to `path` (replacing
    a broken earlier one): a crash leaves no half-written folder where `path` is looked for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        write(tmp)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
