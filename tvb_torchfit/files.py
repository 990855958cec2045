"""Writing files so that a crash never leaves a half-written one: the one atomic-write helper of the package."""
import os
from typing import BinaryIO, Callable, Union


def atomic_write(path: Union[str, os.PathLike], write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, flush it to disk, then rename it onto ``path``.

    Readers see the old file or the new one, never a part; a failed ``write`` removes the temporary file."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_stale_temporaries(path: Union[str, os.PathLike]) -> list:
    """Remove the temporary files ``atomic_write`` left beside ``path`` when its process was killed
    (``path.tmp<pid>`` whose process no longer runs); returns the paths removed."""
    path = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(path))
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in os.listdir(folder):
        pid = name[len(base) + 4:] if name.startswith(base + ".tmp") else ""
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)               # still running (another writer): leave it alone
            if int(pid) != os.getpid():
                continue
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        try:
            os.remove(os.path.join(folder, name))
            removed.append(os.path.join(folder, name))
        except OSError:
            pass
    return removed
