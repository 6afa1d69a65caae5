"""Remote shards in a local cache of bounded size.

A shard on an HTTP(S) server is downloaded whole, once, into `data.shard_cache` (default
~/.cache/ssl_bf/shards), under a lock so that the loader workers and processes of a node
that want it together download it once, and renamed into place only when complete and of
the size its index gives. When the cache outgrows `data.shard_cache_gb`, the shards used
longest ago are deleted (a later read downloads them again). The cap should hold the
shards a node reads at once - about one per loader worker per process - or the cache
keeps re-downloading; with the global sampler's random order every shard is read each
epoch, so a cap below the data set's size downloads it once per epoch.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import time
import urllib.request
from pathlib import Path
from typing import BinaryIO

TIMEOUT_S = 60
ATTEMPTS = 3


def is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def fetch_bytes(url: str) -> bytes:
    """A small file (an index) over HTTP(S); OSError after ATTEMPTS failures."""
    last: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                return response.read()
        except OSError as err:  # URLError and HTTPError are OSErrors
            last = err
            time.sleep(0.5 * attempt)
    raise OSError(f"{url} does not answer ({last})")


def remote_size(url: str) -> int | None:
    """Content-Length of a HEAD request, or None where the server does not answer."""
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return int(response.headers.get("Content-Length", -1))
    except (OSError, ValueError):
        return None


class ShardCache:
    def __init__(self, folder: str, cap_gb: float):
        self.folder = Path(folder).expanduser()
        self.cap = int(cap_gb * 2**30)

    def open(self, url: str, size: int = -1) -> BinaryIO:
        """The shard open for reading: itself when local, else its cached copy, downloaded
        if need be. An open file outlives the copy's eviction by another reader."""
        if not is_url(url):
            return open(url, "rb")
        for _ in range(ATTEMPTS):
            path = self._ensure(url, size)
            try:
                return open(path, "rb")
            except FileNotFoundError:  # evicted since: fetch it again
                continue
        raise OSError(f"{url}: evicted from {self.folder} as soon as fetched; "
                      "raise data.shard_cache_gb")

    def _ensure(self, url: str, size: int) -> Path:
        name = hashlib.sha1(url.encode()).hexdigest()[:16] + "-" + url.rsplit("/", 1)[-1]
        path = self.folder / name
        if not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / (name + ".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one download per shard per node
                if not path.exists():
                    self._download(url, path, size)
            self._evict(keep=path)
        try:
            os.utime(path)  # most recently used
        except FileNotFoundError:
            pass  # evicted already: open() fetches it again
        return path

    def _download(self, url: str, path: Path, size: int) -> None:
        part = path.with_suffix(path.suffix + f".part{os.getpid()}")
        data = fetch_bytes(url)
        if size >= 0 and len(data) != size:
            raise OSError(f"{url}: got {len(data)} bytes, its index says {size}")
        part.write_bytes(data)
        os.replace(part, path)

    def _evict(self, keep: Path) -> None:
        """The least recently used shards out, until the cache is within its cap."""
        shards = []
        for p in self.folder.glob("*.tar"):
            try:  # another process may evict concurrently
                shards.append((p.stat().st_mtime, p.stat().st_size, p))
            except FileNotFoundError:
                continue
        total = sum(size for _, size, _ in shards)
        for _, size, p in sorted(shards):
            if total <= self.cap:
                break
            if p != keep:
                total -= size
                p.unlink(missing_ok=True)
