"""One writer per folder: a lock file naming its holder, cleared when the holder is gone."""

from __future__ import annotations

import json
import os
import socket
import time


class LockedError(RuntimeError):
    """Another live process holds the folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DirectoryLock:
    """``with DirectoryLock(path, "building"):`` — refuses while another live process holds it.

    A lock left by a process that was killed (same host, pid gone) is stale: it is reported on
    ``stale_cleared`` and taken over.
    """

    def __init__(self, lock_path: str, activity: str):
        self.lock_path = lock_path
        self.activity = activity
        self.stale_cleared = None

    def __enter__(self) -> "DirectoryLock":
        os.makedirs(os.path.dirname(self.lock_path) or ".", exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
              "activity": self.activity}
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder and (holder.get("host") != me["host"]
                                           or _alive(int(holder.get("pid", -1)))):
                    since = time.strftime("%Y-%m-%d %H:%M:%S",
                                          time.localtime(holder.get("since", 0)))
                    raise LockedError(
                        f"{os.path.dirname(self.lock_path)} is locked by pid {holder.get('pid')} "
                        f"on {holder.get('host')} ({holder.get('activity')}, since {since}); wait "
                        f"for it to finish, or remove {self.lock_path} if that process is gone"
                    ) from None
                self.stale_cleared = holder
                try:
                    os.remove(self.lock_path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return self
        raise LockedError(f"could not take {self.lock_path}")

    def _holder(self):
        try:
            with open(self.lock_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}  # unreadable: treated as stale (a crash mid-write)

    def __exit__(self, *exc) -> None:
        try:
            os.remove(self.lock_path)
        except FileNotFoundError:
            pass
