"""File modes: what nextlab writes gets the mode a plain open() would give under the user's umask.

Writing through a temporary file (tempfile.mkstemp, and safetensors' own writer) leaves it 0600, readable by its
owner alone; a teammate on a shared filesystem could then not read a checkpoint, an export or a compressed file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

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
