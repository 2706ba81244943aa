"""The one atomic writer of the suite: every file another stage or a resumed run reads (checkpoints, last_checkpoint,
run status, test and probe results, the report, stage records) is written through :func:`atomic_write_bytes`, so a
reader sees the old file or the complete new one, never a prefix.

A write that fails (disk full, quota exceeded, an I/O error) leaves the earlier file intact, removes its partial
temporary file and raises :class:`WriteFailedError`, whose message is one line: the file, the bytes it needed, the
bytes free on that file system and the fix. The entry points turn it into that line and a non-zero exit
(:func:`write_failure_exits`) instead of a traceback."""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Errors that mean "no room here" (the fix is space), as opposed to a broken or read-only file system.
SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def format_bytes(n: int) -> str:
    """``'1.5 GiB (1,610,612,736 bytes)'``: readable, and exact for whoever compares it with ``df -B1``."""
    value, unit = float(n), 'bytes'
    for unit in ('bytes', 'KiB', 'MiB', 'GiB', 'TiB'):
        if value < 1024 or unit == 'TiB':
            break
        value /= 1024
    return f'{n:,} bytes' if unit == 'bytes' else f'{value:.1f} {unit} ({n:,} bytes)'


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free to this user on the file system holding ``path`` (its nearest existing folder); None if unknown."""
    folder = Path(path).absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


class WriteFailedError(OSError):
    """A file could not be written; the earlier file at that path is intact and no temporary file is left.

    ``errno`` / ``strerror`` are the operating system's (ENOSPC, EDQUOT, EIO, ...); ``needed`` is the size of the file
    (None when unknown), ``free`` the bytes free on its file system after the partial file was removed."""

    def __init__(self, path: str | os.PathLike, needed: int | None, free: int | None, err: int | None,
                 strerror: str | None) -> None:
        super().__init__(err, strerror, str(path))
        self.path, self.needed, self.free = Path(path), needed, free

    def __reduce__(self) -> tuple:  # OSError pickles its args, which are not this __init__'s (worker processes)
        return type(self), (self.path, self.needed, self.free, self.errno, self.strerror)

    def __str__(self) -> str:
        need = f'it needs {format_bytes(self.needed)}' if self.needed is not None else 'its size is unknown'
        return (f'could not write {self.path}: {self.strerror or "write failed"}; {need}, {_free_text(self.free)} free '
                f'on its file system; the previous file there (if any) is intact. Fix: {_fix(self.errno)}')


def _free_text(free: int | None) -> str:
    return format_bytes(free) if free is not None else 'an unknown amount'


def _fix(err: int | None) -> str:
    if err in SPACE_ERRNOS:
        where = 'your quota there' if err == errno.EDQUOT else 'that file system'
        return f'free space on {where}, or point the work dir / output folder elsewhere (--work-dir, --out)'
    return ('check that file system (permissions; dmesg for I/O errors), or point the work dir / output folder '
            'elsewhere (--work-dir, --out)')


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one, never a prefix.

    The temporary file is created with mode 0o666 minus the umask, like any file ``open()`` creates (``mkstemp`` would
    make it 0600 and teammates on a shared cluster could not read the result). Any OSError (ENOSPC, EDQUOT, EIO, a
    read-only file system ...) becomes a :class:`WriteFailedError` once the partial temporary file is gone."""
    path = Path(path)
    try:
        _write_and_rename(data, path)
    except OSError as e:
        raise WriteFailedError(path, len(data), free_bytes(path.parent), e.errno, e.strerror) from e


def _write_and_rename(data: bytes, path: Path) -> None:
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
        # The partial file holds the blocks a full disk needs back; if even the unlink fails, the checkpoint hook's
        # next start removes it (is_temporary).
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def write_failure_exits(prefix: str) -> Iterator[None]:
    """For an entry point's ``main``: a failed write ends the command with one line on stderr (``prefix`` + the
    message) and exit status 1 instead of a traceback. Also a disk-full error raised by a writer that is not ours
    (mmengine's scalar logs, a copied picture): its message says what is known."""
    try:
        yield
    except WriteFailedError as e:
        raise SystemExit(f'{prefix} {e}') from None
    except OSError as e:
        if e.errno not in SPACE_ERRNOS:
            raise
        # No size: the library wrote the file itself, and may have left a prefix of it.
        what = f'could not write {e.filename}' if e.filename else 'a write failed'
        free = f'{_free_text(free_bytes(e.filename))} free on its file system' if e.filename else \
            'the file is not named (the writer is a library)'
        raise SystemExit(f'{prefix} {what}: {e.strerror}; {free}. Fix: {_fix(e.errno)}') from None


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
