"""Remote shards in a local cache of bounded size.

A shard on an HTTP(S) server is downloaded whole, once, into `data.shard_cache` (default
~/.cache/ssl_bf/shards), under a lock so that the loader workers and processes of a node
that want it together download it once; it is streamed to a part file and renamed into
place only when complete and of the size its index gives. When the cache outgrows
`data.shard_cache_gb`, the shards used longest ago are deleted (a later read downloads them
again), except those used in the last IN_USE_S seconds. The cap should hold the shards a
node reads at once - about one per loader worker per process - or the cache keeps
re-downloading; with the global sampler's random order every shard is read each epoch, so a
cap below the data set's size downloads it once per epoch. A shard that cannot be fetched
after a few tries ends the run with one error line (train.resume=auto continues once the
server answers); it is not papered over by replacing its images.
"""
from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

TIMEOUT_S = 60
SHARD_TRIES = 4  # waits of 1, 4 and 16 s between them: a blip of the server is ridden out
INDEX_TRIES = 2  # before training, a wrong URL should not keep the user waiting
STALE_PART_S = 3600  # a part file this old was left by a killed download
# A shard fetched or read this recently is not evicted: another worker may be about to open
# it (an open file survives eviction, a path does not). The cap can so be passed by the
# shards in use at that moment.
IN_USE_S = 30.0
NETWORK_ERRORS = (OSError, http.client.HTTPException)  # IncompleteRead is not an OSError


def is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def fetch(url: str, into: BinaryIO | None = None, tries: int | None = None) -> bytes | None:
    """GET url - into a file, streamed, or returned; OSError after `tries` (SHARD_TRIES)
    failures."""
    last: Exception | None = None
    for attempt in range(tries or SHARD_TRIES):
        if attempt:
            time.sleep(4 ** (attempt - 1))
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                if into is None:
                    return response.read()
                into.seek(0)
                into.truncate()
                shutil.copyfileobj(response, into, 1 << 20)
                return None
        except NETWORK_ERRORS as err:  # URLError and HTTPError are OSErrors
            last = err
    raise OSError(f"{url} does not answer ({last})")


def fetch_bytes(url: str) -> bytes:
    """A small file (a shard index) over HTTP(S)."""
    return fetch(url, tries=INDEX_TRIES)


def remote_size(url: str) -> int | None:
    """The file's size: -1 where the server does not say, None where it is not there or does
    not answer. A server that refuses HEAD (presigned URLs) is asked for its first byte."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                    timeout=TIMEOUT_S) as response:
            return int(response.headers.get("Content-Length", -1))
    except urllib.error.HTTPError as err:
        if err.code not in (403, 405):
            return None
    except (*NETWORK_ERRORS, ValueError):
        return None
    try:
        request = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            return int(total) if total.isdigit() else -1
    except (*NETWORK_ERRORS, ValueError):
        return None


class ShardCache:
    def __init__(self, folder: str, cap_gb: float):
        self.folder = Path(folder).expanduser()
        self.cap = int(cap_gb * 2**30)

    def open(self, url: str, size: int = -1) -> BinaryIO:
        """The shard open for reading: itself when local, else its cached copy, downloaded
        if need be (OSError where it cannot be). An open file outlives the copy's eviction
        by another reader."""
        if not is_url(url):
            return open(url, "rb")
        for _ in range(3):
            path = self._ensure(url, size)
            try:
                return open(path, "rb")
            except FileNotFoundError:  # evicted since: fetch it again
                continue
        raise OSError(f"evicted from {self.folder} as soon as fetched: raise "
                      "data.shard_cache_gb to hold a shard per loader worker")

    def _ensure(self, url: str, size: int) -> Path:
        path = self.folder / cache_name(url)
        if not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(path.with_suffix(".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one download per shard per node
                if not path.exists():
                    self._download(url, path, size)
            self._evict(keep=path)
        try:
            os.utime(path)  # most recently used
        except OSError:
            pass  # evicted already (open() fetches it again), or another user's copy
        return path

    def _download(self, url: str, path: Path, size: int) -> None:
        part = path.with_suffix(f".part{os.getpid()}")
        try:
            with open(part, "wb") as f:
                fetch(url, into=f)
            got = part.stat().st_size
            if size >= 0 and got != size:
                raise OSError(f"got {got} bytes, its index says {size}")
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)

    def _evict(self, keep: Path) -> None:
        """Part files of killed downloads out; then the least recently used shards, until
        the cache is within its cap."""
        shards, now = [], time.time()
        for p in self.folder.iterdir():
            try:  # another process may delete concurrently
                st = p.stat()
                if ".part" in p.suffix and now - st.st_mtime > STALE_PART_S:
                    p.unlink(missing_ok=True)
                elif p.suffix == ".tar":
                    shards.append((st.st_mtime, st.st_size, p))
            except FileNotFoundError:
                continue
        total = sum(size for _, size, _ in shards)
        for mtime, size, p in sorted(shards):
            if total <= self.cap or now - mtime < IN_USE_S:
                break  # oldest first: the rest are in use too
            if p != keep:
                total -= size
                p.unlink(missing_ok=True)


def cache_name(url: str) -> str:
    """A file name for the shard at url: unique (a hash of the whole URL), readable (the
    path's last part, no query string) and ending in .tar, which the eviction counts."""
    stem = Path(urlsplit(url).path).stem or "shard"
    return f"{hashlib.sha1(url.encode()).hexdigest()[:16]}-{stem}.tar"
