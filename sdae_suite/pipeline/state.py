"""What tools/run_benchmark.py keeps in its work dir between runs: a lock (one pipeline per work dir at a time) and one
record per stage of what the stage was computed with.

A stage's record holds its *recipe* (command, environment, budget, the content of the configs it names, following
their `_base_` files) and the identity of the files it read (*inputs*) and wrote (*outputs*): a content hash for small
files, size + mtime for large ones (checkpoints), so checking a finished pipeline costs no checkpoint read. A finished
stage is reused only when all three still match; otherwise it is computed again and the pipeline says why.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sdae_suite.contracts import LAST_CHECKPOINT_FILE
from sdae_suite.engine.atomic import atomic_write_json

LOCK_FILE = 'pipeline.lock'
LAST = '@last-checkpoint:'  # an argument resolved when the stage starts: the newest checkpoint recorded in that dir
SMALL_FILE = 1 << 20  # below this a file is identified by its content, above by size + mtime


class WorkDirLocked(Exception):
    """Another pipeline (or a stage process it left running) holds the work dir."""


def _read_holder(lock_file: Path) -> dict[str, Any] | None:
    """What the holder wrote into the lock file (PID, host, start, command); None if nothing readable."""
    for _ in range(20):  # the holder writes its PID right after taking the lock: give it a moment
        try:
            info = json.loads(lock_file.read_text() or 'null')
        except (OSError, ValueError):
            info = None
        if isinstance(info, dict) and isinstance(info.get('pid'), int):
            return info
        time.sleep(0.05)
    return None


def _orphaned(info: dict[str, Any] | None) -> bool:
    """The pipeline that took the lock has ended (on this host): only stage processes it started still hold it."""
    if info is None or info.get('host') != socket.gethostname():
        return False
    try:
        os.kill(info['pid'], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def work_dir_lock(work: Path, orphan_grace_s: float = 15.0) -> Iterator[int]:
    """Hold `<work>/pipeline.lock` for the block; yields its file descriptor.

    flock, not a PID file: the kernel releases the lock when its last holder dies, so a pipeline killed with kill -9
    never leaves a stale lock behind. Stage processes that get the descriptor (`pass_fds`) keep holding it, so a stage
    left running by a killed pipeline still keeps a second pipeline out of the work dir. When the pipeline that holds
    the lock is running, this stops at once; when it has ended and only its stage processes hold the lock, they are
    usually still exiting (a kill of the whole process group takes a moment to finish): wait up to `orphan_grace_s`.
    """
    work.mkdir(parents=True, exist_ok=True)
    lock_file = work / LOCK_FILE
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            info = _read_holder(lock_file)
            deadline = time.monotonic() + orphan_grace_s
            locked = False
            while _orphaned(info) and time.monotonic() < deadline and not locked:
                time.sleep(0.1)
                locked = _try_lock(fd)
            if not locked:
                if info is None:
                    holder = 'a process that did not write its PID into the lock file'
                else:
                    holder = (f'PID {info["pid"]} on {info.get("host", "?")}, started {info.get("started", "?")}: '
                              f'{info.get("command", "?")}')
                    if _orphaned(info):
                        holder += (f' (PID {info["pid"]} has ended, but a stage process it started still holds the '
                                   'lock until that stage ends)')
                raise WorkDirLocked(
                    f'another pipeline is running in {work}: {holder}. Two pipelines in one work dir would run the '
                    f'same stages and interleave their logs: wait for it to finish, stop it, or pass another '
                    f'--work-dir.')
        os.ftruncate(fd, 0)
        info = {'pid': os.getpid(), 'host': socket.gethostname(), 'started': time.strftime('%Y-%m-%d %H:%M:%S'),
                'command': shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])}
        os.write(fd, (json.dumps(info) + '\n').encode())
        yield fd
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def file_identity(path: Path) -> dict[str, Any] | None:
    """Content hash of a small file, size + mtime of a large one; None when it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    if st.st_size <= SMALL_FILE:
        return {'sha256': hashlib.sha256(path.read_bytes()).hexdigest()}
    return {'size': st.st_size, 'mtime_ns': st.st_mtime_ns}


def last_checkpoint(work_dir: Path) -> Path | None:
    """The newest checkpoint mmengine recorded in `work_dir` (its `last_checkpoint` file), None when none is."""
    record = work_dir / LAST_CHECKPOINT_FILE
    try:
        text = record.read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None


def input_identity(spec: str) -> dict[str, Any] | None:
    """Identity of a stage input: a file path, or LAST + a work dir (then the checkpoint it records, path included)."""
    if not spec.startswith(LAST):
        return file_identity(Path(spec))
    ckpt = last_checkpoint(Path(spec[len(LAST):]))
    ident = file_identity(ckpt) if ckpt else None
    return None if ident is None else {'path': str(ckpt), **ident}


# A config's `_base_` files, found by their quoted paths: OpenMMLab configs are not valid Python before mmengine
# substitutes their `{{_base_.x}}` references, and loading them through mmengine would execute them (and import mmdet)
# for every stage. A quoted '*.py' that is no base costs only one extra hash. 'pkg::path' bases belong to installed
# packages, which requirements.txt pins.
_QUOTED_PY = re.compile(r'''['"]([^'"\n:]+\.py)['"]''')


def config_digest(path: Path, _seen: set[Path] | None = None) -> str:
    """sha256 over a config and, recursively, the local files it inherits from."""
    seen = set() if _seen is None else _seen
    path = path.resolve()
    if path in seen:
        return ''
    seen.add(path)
    try:
        text = path.read_text(encoding='utf-8')
    except OSError:
        return 'missing'
    h = hashlib.sha256(text.encode())
    for rel in _QUOTED_PY.findall(text):
        base = path.parent / rel
        if base.is_file():
            h.update(config_digest(base, seen).encode())
    return h.hexdigest()


def recipe_key(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def read_record(path: Path) -> dict[str, Any] | None:
    """A stage record, or None when absent. One written before records had keys (or damaged) has no 'key': it matches
    nothing, so its stage is recomputed."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None if not path.exists() else {}
    return data if isinstance(data, dict) else {}


def write_record(path: Path, record: dict[str, Any]) -> None:
    atomic_write_json(record, path)  # a kill mid-write leaves the old record, never half a new one


def recipe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between the recipe a stage was computed with and this run's, in words."""
    if not old:
        return ['its record predates keyed stage markers (no note of the settings it was computed with)']
    out = []
    if old.get('budget') != new.get('budget'):
        out.append(f'budget {old.get("budget")!r} -> {new.get("budget")!r}')
    for cfg in sorted(set(old.get('configs', {})) | set(new.get('configs', {}))):
        if old.get('configs', {}).get(cfg) != new.get('configs', {}).get(cfg):
            out.append(f'config {cfg} changed')
    if old.get('cmd') != new.get('cmd'):
        before, after = old.get('cmd') or [], new.get('cmd') or []
        gone = [a for a in before if a not in after][:3]
        added = [a for a in after if a not in before][:3]
        out.append('command changed (' + ', '.join([*(f'-{a}' for a in gone), *(f'+{a}' for a in added)] or
                                                   ['argument order']) + ')')
    if old.get('env') != new.get('env'):
        out.append('environment changed')
    return out or ['its settings changed']


def identity_changes(kind: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`kind` ('input' / 'output') files whose identity differs between the record and now."""
    out = []
    for spec in sorted(set(old) | set(new)):
        before, now = old.get(spec), new.get(spec)
        if before == now:
            continue
        name = f'checkpoint recorded in {spec[len(LAST):]}' if spec.startswith(LAST) else spec
        if now is None:
            out.append(f'its {kind} {name} is gone')
        elif before is None:
            out.append(f'its {kind} {name} is new')
        else:
            out.append(f'its {kind} {name} changed since')
    return out
