"""Downloads you can trust: weights by ``http://`` / ``https://`` URL, fetched into
a cache through detectron2's ``PathManager`` (iopath), so that every path that
reads a location with it (``MODEL.WEIGHTS``, backbone and teacher weights,
detectron2's own ``detectron2://`` model-zoo names) gets the same guarantees.

:class:`VerifiedHTTPHandler` replaces iopath's ``HTTPURLHandler`` for
``http://`` and ``https://`` (``import centerx`` registers it):

- **cache key = the whole URL** (scheme, host, port, path and query): the file of
  ``http://a/x.pth`` is never served for ``http://b/x.pth`` or ``x.pth?dl=1``.
  Files live in ``$FVCORE_CACHE/centerx_downloads/<sha256 of the URL>/`` (the
  same root detectron2 uses, default ``~/.torch/iopath_cache``), beside a
  ``meta.json`` with the URL, size, ETag and Last-Modified;
- **bounded waits**: every connect and every read waits at most
  ``CENTERX_DOWNLOAD_TIMEOUT`` seconds (default 30): a server that never answers,
  or stalls mid-file, ends in :class:`DownloadError` naming the URL and the wait;
- **never a partial file**: the body is written to a temporary file next to the
  cache entry and renamed into place only when complete: its length equals the
  server's ``Content-Length`` when the server gives one, and the caller's
  ``validate`` (for weights: the file loads as a checkpoint) accepts it, which is
  what catches a server that closes early without giving a length;
- **optional expected hash**: a URL ending in ``#sha256=<hex>`` (pip's
  convention; a prefix of 8 or more hex digits is enough) is checked before the
  file is used, and again on every later use of the cached copy;
- **fresh**: a cached file is revalidated on each use with a conditional request
  (``If-None-Match`` / ``If-Modified-Since``), so a file that changed on its
  server is fetched again; where the server cannot be reached, the cached copy is
  used with a warning. ``CENTERX_DOWNLOAD_REFRESH=1`` fetches every file anew;
- a progress bar for files of 10 MB and more.

Both settings are environment variables, as detectron2's ``FVCORE_CACHE`` is,
because downloads happen below every config (a teacher's weights, a backbone).
"""

import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from iopath.common.file_io import HTTPURLHandler, get_cache_dir
from tqdm import tqdm

__all__ = ["DownloadError", "VerifiedHTTPHandler", "download", "download_timeout", "expected_sha256"]

logger = logging.getLogger(__name__)

TIMEOUT_ENV = "CENTERX_DOWNLOAD_TIMEOUT"
REFRESH_ENV = "CENTERX_DOWNLOAD_REFRESH"
DEFAULT_TIMEOUT_S = 30.0
# files at least this large show a progress bar
PROGRESS_MIN_BYTES = 10 * 1024 * 1024
_CHUNK = 1 << 20
_HASH_FRAGMENT = re.compile(r"^sha256=([0-9a-fA-F]{8,64})$")


class DownloadError(OSError):
    """A URL that could not be fetched completely and correctly; the message names
    the URL and what went wrong."""


def download_timeout() -> float:
    """Seconds any connect or read may wait (``CENTERX_DOWNLOAD_TIMEOUT``, default 30)."""
    value = os.environ.get(TIMEOUT_ENV, "")
    try:
        timeout = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise DownloadError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds.") from None
    if not timeout > 0:
        raise DownloadError(f"{TIMEOUT_ENV}={value!r} must be a positive number of seconds.")
    return timeout


def expected_sha256(url: str) -> str | None:
    """The hex digest (or prefix) a URL's ``#sha256=<hex>`` fragment asks for, or None."""
    fragment = urllib.parse.urldefrag(url)[1]
    if not fragment:
        return None
    match = _HASH_FRAGMENT.match(fragment)
    if match is None:
        raise DownloadError(f"'{url}': the URL fragment '#{fragment}' is not '#sha256=<8 to 64 hex digits>'.")
    return match.group(1).lower()


def _cache_entry(url: str, cache_dir: str | None) -> str:
    """Folder of a URL's cached file: one per whole URL (the fragment aside)."""
    key = hashlib.sha256(urllib.parse.urldefrag(url)[0].encode()).hexdigest()[:32]
    return os.path.join(get_cache_dir(cache_dir), "centerx_downloads", key)


def _file_name(url: str) -> str:
    name = os.path.basename(urllib.parse.urlparse(url).path) or "download"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:200]


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_hash(url: str, path: str, want: str | None) -> None:
    if want is None:
        return
    got = _sha256_of(path)
    if not got.startswith(want):
        raise DownloadError(
            f"'{url}': the file's sha256 is {got}, not the {want} the URL asks for (#sha256=...). "
            "The file on the server is not the one expected; check the URL or the hash."
        )


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}: {e.reason}"
    if isinstance(e, (socket.timeout, TimeoutError)) or isinstance(getattr(e, "reason", None), socket.timeout):
        return f"no answer within {download_timeout():g} s ({TIMEOUT_ENV})"
    reason = getattr(e, "reason", None) or e
    return str(reason).splitlines()[0] if str(reason) else type(e).__name__


def _read_meta(entry: str) -> dict:
    try:
        with open(os.path.join(entry, "meta.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def download(
    url: str, cache_dir: str | None = None, validate: Callable[[str], None] | None = None, refresh: bool | None = None
) -> str:
    """The local path of ``url``'s file, fetched into the cache as the module
    docstring describes.

    Args:
        url: ``http://`` or ``https://`` URL, optionally ending in ``#sha256=<hex>``.
        cache_dir: the cache root (default ``$FVCORE_CACHE``, as detectron2's).
        validate: called with the downloaded temporary file before it is kept;
            raises if the file is not what the caller can use (then nothing is
            cached).
        refresh: fetch anew even when a cached copy is current (default:
            ``CENTERX_DOWNLOAD_REFRESH=1``).

    Raises:
        DownloadError: unreachable, an HTTP error, a wait past the timeout, a body
            shorter than its length, a hash that differs, a file ``validate``
            refuses (the message names the URL and the reason).
    """
    want = expected_sha256(url)
    fetch_url = urllib.parse.urldefrag(url)[0]
    if refresh is None:
        refresh = os.environ.get(REFRESH_ENV, "") not in ("", "0")
    entry = _cache_entry(url, cache_dir)
    meta = _read_meta(entry)
    cached = os.path.join(entry, meta["file"]) if meta.get("file") else ""
    have = bool(cached) and os.path.isfile(cached) and os.path.getsize(cached) == meta.get("size")
    request = urllib.request.Request(fetch_url, headers={"User-Agent": "centerx"})
    if have and not refresh:
        if meta.get("etag"):
            request.add_header("If-None-Match", meta["etag"])
        if meta.get("last_modified"):
            request.add_header("If-Modified-Since", meta["last_modified"])
    timeout = download_timeout()
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 304 and have:
            _check_hash(url, cached, want)
            return cached
        raise DownloadError(f"cannot fetch '{url}' ({_reason(e)}).") from None
    except (urllib.error.URLError, OSError) as e:
        if have and not refresh:
            logger.warning(
                f"'{url}' cannot be reached to check for a newer file ({_reason(e)}); using the cached copy {cached}."
            )
            _check_hash(url, cached, want)
            return cached
        raise DownloadError(f"cannot fetch '{url}' ({_reason(e)}).") from None
    with response:
        os.makedirs(entry, exist_ok=True)
        name = _file_name(fetch_url)
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=entry)
        try:
            received = 0
            with (
                os.fdopen(fd, "wb") as f,
                tqdm(
                    total=expected, unit="B", unit_scale=True, desc=name, disable=(expected or 0) < PROGRESS_MIN_BYTES
                ) as bar,
            ):
                while True:
                    try:
                        block = response.read1(_CHUNK)  # what has arrived, so a stall keeps the bytes before it
                    except (OSError, ValueError) as e:  # timeouts, resets, http.client.IncompleteRead
                        raise DownloadError(
                            f"'{url}' broke off after {received} bytes"
                            + (f" of {expected}" if expected else "")
                            + f" ({_reason(e)})."
                        ) from None
                    if not block:
                        break
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
                f.flush()
                os.fsync(f.fileno())
            if expected is not None and received != expected:
                raise DownloadError(
                    f"'{url}' ended after {received} of its {expected} bytes; nothing was cached. Try again."
                )
            _check_hash(url, tmp, want)
            if validate is not None:
                try:
                    validate(tmp)
                except Exception as e:
                    raise DownloadError(
                        f"'{url}' gave {received} bytes that are not a usable file ({e}); nothing "
                        "was cached. If the download broke off, try again."
                    ) from None
            final = os.path.join(entry, name)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        new_meta = {
            "url": fetch_url,
            "file": name,
            "size": received,
            "etag": response.headers.get("ETag"),
            "last_modified": response.headers.get("Last-Modified"),
        }
        fd, tmp_meta = tempfile.mkstemp(prefix=".meta.", dir=entry)
        with os.fdopen(fd, "w") as f:
            json.dump(new_meta, f)
        os.replace(tmp_meta, os.path.join(entry, "meta.json"))
    if have and meta.get("file") != name and os.path.isfile(cached):
        os.remove(cached)
    logger.info(f"Downloaded '{fetch_url}' ({received} bytes) to {final}.")
    return final


class VerifiedHTTPHandler(HTTPURLHandler):
    """iopath's HTTP(S) handler with :func:`download`'s guarantees: the whole URL
    as cache key, bounded waits, atomic and complete files, ``#sha256=`` checks,
    revalidation. ``PathManager.get_local_path(url, validate=fn)`` passes ``fn``
    to :func:`download`."""

    def _get_supported_prefixes(self):
        return ["http://", "https://"]

    def _get_local_path(self, path: str, force: bool = False, cache_dir: str | None = None, **kwargs) -> str:
        self._check_kwargs({k: v for k, v in kwargs.items() if k != "validate"})
        return download(path, cache_dir=cache_dir, validate=kwargs.get("validate"), refresh=True if force else None)


def register_download_handler(path_manager) -> None:
    """Put :class:`VerifiedHTTPHandler` in front of ``path_manager`` for http(s)."""
    path_manager.register_handler(VerifiedHTTPHandler(), allow_override=True)
