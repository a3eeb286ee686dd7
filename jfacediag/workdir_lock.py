"""One writer per directory: DIR/.jfacediag.lock names its owner (host, pid, start time, command).

A second run on the same workdir (train, a cv fold, the cv directory, an align --dst) stops at once and names the
owner. A lock whose owner died (same host, pid gone: SIGKILL, a crash, a reboot) is stale and taken over with a
message; a lock from another host cannot be checked from here, so it is refused with the file to delete when the
user knows that run is gone. The lock is created with O_CREAT | O_EXCL, so two runs started together cannot both
win. Remote workdirs (gs://) have no atomic create: they are not locked, and the log says so.
"""
import atexit
import contextlib
import json
import os
import socket
import sys
import time

from jfacediag import fileio

LOCK_FILE = ".jfacediag.lock"


class Locked(RuntimeError):
  """Another live run owns the directory; the message names it."""


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Exists, owned by another user.
    return True
  return True


def _owner():
  return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
          "command": " ".join([os.path.basename(sys.executable)] + sys.argv)[:500]}


def acquire(directory, what="workdir"):
  """Takes DIR's lock for this process; returns the lock path ("" for a remote directory). Raises Locked."""
  if fileio.is_remote(directory):
    print(f"note: {directory} is remote: not locked against a second writer", flush=True)
    return ""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, LOCK_FILE)
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      try:
        with open(path, encoding="utf-8") as f:
          owner = json.load(f)
      except (OSError, ValueError):
        owner = {}
      if owner.get("host") == socket.gethostname() and owner.get("pid") == os.getpid():
        return ""  # Already held by this process (an outer call releases it).
      if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int) and not _alive(owner["pid"]):
        print(f"note: {directory}: removed a stale lock of pid {owner['pid']} (started {owner.get('started')}, no "
              f"longer running)", flush=True)
        with contextlib.suppress(FileNotFoundError):
          os.remove(path)
        continue
      if not owner:  # Being written right now, or torn: treat as held.
        raise Locked(f"{directory} is locked by another run ({path} is being written); wait, or delete it if no "
                     "run uses this directory") from None
      where = ("this machine" if owner.get("host") == socket.gethostname() else f"host {owner.get('host')}")
      raise Locked(f"{directory} is in use by another jfacediag run: pid {owner.get('pid')} on {where}, started "
                   f"{owner.get('started')} ({owner.get('command', '?')}). Wait for it, use another {what}, or delete "
                   f"{path} if that run is gone") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(_owner(), f)
    atexit.register(release, path)
    return path
  raise Locked(f"{directory}: could not take {path}")


def release(path):
  """Removes the lock if this process still owns it."""
  if not path:
    return
  try:
    with open(path, encoding="utf-8") as f:
      owner = json.load(f)
  except (OSError, ValueError):
    return
  if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


@contextlib.contextmanager
def held(directory, what="workdir"):
  path = acquire(directory, what)
  try:
    yield path
  finally:
    release(path)
