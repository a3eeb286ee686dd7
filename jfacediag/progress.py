"""Progress that reads well in a log: a tqdm bar on a terminal; when stderr is a file, a pipe or a CI log, one
plain line now and then (count, %, rate, ETA and the bar's postfix: step, epoch, loss, img/s) instead of thousands of
carriage returns on one line, and nothing left dangling for the next message to be glued onto.

  for x in progress.bar(items, desc="scan images", unit="img"): ...
  bar = progress.bar(total=steps, unit="step", every_fraction=0.1); bar.update(1); bar.set_postfix(loss=...)
  progress.log("Extracted ...")    # a message from process 0 only (multi-host runs print it once)
"""
import sys
import time

import jax
from tqdm import tqdm


def log(*args):
  if jax.process_index() == 0:
    print(*args, flush=True)


def bar(iterable=None, total=None, desc="", unit="it", disable=False, initial=0, every_seconds=30.0,
        every_fraction=0.0, leave=True):
  """tqdm on a terminal; otherwise a line every `every_seconds` (and every `every_fraction` of the total, when
  set), plus a last line for work that took more than a couple of seconds."""
  if disable:
    return tqdm(iterable, total=total, disable=True)
  if sys.stderr.isatty():
    return tqdm(iterable, total=total, desc=desc or None, unit=unit, initial=initial, dynamic_ncols=True,
                leave=leave)
  return _Lines(iterable, total, desc, unit, initial, every_seconds, every_fraction)


def _duration(s):
  s = round(s)
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class _Lines:

  def __init__(self, iterable, total, desc, unit, initial, every_seconds, every_fraction):
    self.iterable, self.desc, self.unit = iterable, desc or "progress", unit
    self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    self.n = self.start = self.printed = initial
    self.t0 = self.last = time.time()
    self.every_seconds, self.every_fraction = every_seconds, every_fraction
    self.next_fraction = every_fraction
    self.postfix, self.closed = "", False

  def __iter__(self):
    for x in self.iterable:
      yield x
      self.update(1)
    self.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def set_postfix(self, **kw):
    self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

  def set_description(self, desc):
    self.desc = desc

  def update(self, k=1):
    self.n += k
    now = time.time()
    due = now - self.last >= self.every_seconds
    if self.every_fraction and self.total and self.n / self.total >= self.next_fraction - 1e-9:
      due = True
      while self.next_fraction <= self.n / self.total + 1e-9:
        self.next_fraction += self.every_fraction
    if due:
      self._line(now)

  def _line(self, now):
    rate = (self.n - self.start) / max(now - self.t0, 1e-9)
    head = f"{self.desc}: {self.n}" + (f"/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)" if self.total
                                      else f" {self.unit}")
    parts = [head, f"{rate:.2f} {self.unit}/s", f"elapsed {_duration(now - self.t0)}"]
    if self.total and self.n < self.total and rate > 0:
      parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
    if self.postfix:
      parts.append(self.postfix)
    print(", ".join(parts), file=sys.stderr, flush=True)
    self.last, self.printed = now, self.n

  def close(self):
    if self.closed:
      return
    self.closed = True
    now = time.time()
    if self.n != self.printed and (now - self.t0 > 2.0 or self.every_fraction):
      self._line(now)
