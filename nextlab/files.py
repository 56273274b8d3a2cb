"""Files: the mode of what nextlab writes, the lock a run's writer holds, and JSON objects read with one-line errors.

- Modes: what nextlab writes gets the mode a plain open() would give under the user's umask. Writing through a
  temporary file (tempfile.mkstemp, and safetensors' own writer) leaves it 0600, readable by its owner alone; a
  teammate on a shared filesystem could then not read a checkpoint, an export or a compressed file.
- Locks: one writer per run directory. A second `nextlab train` (or sweep point, or tuning run) on a directory
  another process is writing is refused, naming that process; a lock whose process is gone is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path

from nextlab.errors import NextlabError

LOCK_FILE = ".nextlab.lock"

_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask (Linux reports it in /proc; elsewhere it is read by setting it and putting it back)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    with _lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def give_default_mode(path: str | Path) -> None:
    """chmod `path` to what open() would have created it with: 0666 less the umask."""
    os.chmod(path, 0o666 & ~current_umask())


def read_json_object(path: str | Path) -> dict:
    """A JSON object from a file; a missing, unreadable or malformed one is a one-line error naming it."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise NextlabError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NextlabError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise NextlabError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(obj, dict):
        raise NextlabError(f"{path}: expected a JSON object")
    return obj


def lock_beside(path: str | Path) -> Path:
    """The lock file of an output that is replaced whole (a tuned checkpoint): beside it, not inside."""
    path = Path(path)
    return path.with_name(f".{path.name}{LOCK_FILE}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _holder(lock: Path) -> dict | None:
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


@contextlib.contextmanager
def run_lock(lock: str | Path, what: str, warn=print):
    """Hold the lock file `lock` while writing a run. Held by a live process: refused, naming its pid and host.
    Held by a process of this host that is gone: taken over, with a warning. Released (removed) at the end."""
    lock = Path(lock)
    try:
        created = not lock.parent.exists()
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NextlabError(f"{lock.parent}: cannot make this directory ({e.strerror})") from None
    me = {"pid": os.getpid(), "host": socket.gethostname(), "what": what, "since": time.time()}
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            holder = _holder(lock)
            if holder is None and time.time() - lock.stat().st_mtime < 5:  # being written this instant
                time.sleep(0.1)
                continue
            if holder is not None and holder.get("host") == me["host"] and not _alive(holder["pid"]):
                warn(f"warning: {lock}: taking over the lock of {holder.get('what', 'a run')} (pid {holder['pid']}), "
                     "whose process is gone")
                lock.unlink(missing_ok=True)
                continue
            who = (f"{holder.get('what', 'another run')} (pid {holder['pid']} on {holder.get('host', '?')})" if holder
                   else "another process (its lock file is unreadable)")
            raise NextlabError(f"{lock.parent}: {who} is writing here; wait for it to finish or choose another directory "
                               f"(if that process is gone, delete {lock})") from None
        except OSError as e:  # a read-only directory, a name too long
            raise NextlabError(f"{lock}: cannot write the lock file ({e.strerror})") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield
    finally:
        if _holder(lock) == me:
            lock.unlink(missing_ok=True)
        if created and not any(lock.parent.iterdir()):  # refused before writing anything: leave no trace
            lock.parent.rmdir()
