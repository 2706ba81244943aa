"""The one atomic writer of the suite: every file another stage or a resumed run reads (checkpoints, last_checkpoint,
run status, test and probe results, the report, stage records) is written through :func:`atomic_write_bytes`, so a
reader sees the old file or the complete new one, never a prefix."""
from __future__ import annotations

import io
import json
import os
import secrets
from pathlib import Path
from typing import Any


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one, never a prefix.

    The temporary file is created with mode 0o666 minus the umask, like any file ``open()`` creates (``mkstemp`` would
    make it 0600 and teammates on a shared cluster could not read the result)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f'.{path.name}.{secrets.token_hex(4)}.tmp'
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a truncated file behind."""
    import torch  # here: the rest of this module serves processes that never load torch (the pipeline, the doctor)

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(buf.getvalue(), path)


def is_temporary(path: Path) -> bool:
    """A file :func:`atomic_write_bytes` leaves behind when its process is killed mid-write."""
    return path.name.startswith('.') and path.name.endswith('.tmp')


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    atomic_write_bytes(text.encode('utf-8'), path)


def atomic_write_json(obj: Any, path: str | os.PathLike, allow_nan: bool = True) -> None:
    """JSON, indented, one trailing newline; values JSON does not know (paths, dates) are written as strings.
    ``allow_nan=False``: a NaN or inf is an error (results a report ranks), not a non-standard ``NaN`` token."""
    atomic_write_text(json.dumps(obj, indent=1, default=str, allow_nan=allow_nan) + '\n', path)
