"""Downloads that cannot hang or lie (centerx.downloads), against HTTP servers on
127.0.0.1 started here: the cache is keyed by the whole URL (host, port, path,
query), waits are bounded, a file is kept only when complete and loadable, a
``#sha256=`` hash is checked, a changed file is fetched again."""

import hashlib
import http.server
import io
import os
import socket
import threading
import time

import pytest
import torch
from detectron2.modeling import build_model

from centerx.checkpoint import StrictCheckpointer, WeightsDownloadError, local_weights_path
from centerx.downloads import DownloadError, download

from tiny_models import randomize_, tiny_cfg


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files[path]`` (path with its query) with a length and an ETag,
    answers 304 to a matching If-None-Match; ``server.modes[path]`` makes it stall
    mid-file or close early without a length."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.log.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        mode = self.server.modes.get(self.path, "")
        if mode == "" and self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        if mode != "no-length":
            self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.end_headers()
        if mode == "":
            self.wfile.write(body)
            return
        self.wfile.write(body[: len(body) // 2])  # half the file, then stall or close
        self.wfile.flush()
        if mode == "stall":
            self.server.release.wait(10)


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """A factory of servers on 127.0.0.1: serve(files, modes) -> (base URL, server);
    the download cache in tmp_path/cache, a 1 s timeout."""
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CENTERX_DOWNLOAD_TIMEOUT", "1")
    monkeypatch.delenv("CENTERX_DOWNLOAD_REFRESH", raising=False)
    servers = []

    def start(files, modes=None, host="127.0.0.1"):
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.files, httpd.modes, httpd.log, httpd.release = dict(files), dict(modes or {}), [], threading.Event()
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://{host}:{httpd.server_address[1]}", httpd

    yield start
    for httpd in servers:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _cached_files(tmp_path):
    root = tmp_path / "cache" / "centerx_downloads"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_same_path_on_another_host_or_with_a_query_is_another_file(serve):
    """The old cache served http://A/m.pth's file for http://B/m.pth and for m.pth?dl=1."""
    a, _ = serve({"/m.pth": b"from host a"})
    b, _ = serve({"/m.pth": b"from host b"}, host="localhost")
    c, _ = serve({"/m.pth": b"plain", "/m.pth?dl=1": b"with a query"})
    assert _read(download(f"{a}/m.pth")) == b"from host a"
    assert _read(download(f"{b}/m.pth")) == b"from host b"
    assert _read(download(f"{c}/m.pth")) == b"plain"
    assert _read(download(f"{c}/m.pth?dl=1")) == b"with a query"
    assert _read(download(f"{a}/m.pth")) == b"from host a"  # still its own file


def test_weights_with_a_query_string_load(serve):
    """detectron2's checkpointer refuses a query it does not know (or strips it and
    reads another cached file); here the whole URL is fetched and loaded."""
    source = randomize_(build_model(tiny_cfg("CenterNet")), seed=3)
    buffer = io.BytesIO()
    torch.save({"model": source.state_dict()}, buffer)
    url, _ = serve({"/w.pth?dl=1": buffer.getvalue(), "/w.pth": b"<html>not this</html>"})
    model = build_model(tiny_cfg("CenterNet"))
    StrictCheckpointer(model).load(f"{url}/w.pth?dl=1")
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_server_that_never_answers_is_a_bounded_wait(tmp_path, serve):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # connections are accepted by the kernel, nothing is ever sent
    try:
        start = time.monotonic()
        with pytest.raises(DownloadError, match=r"no answer within 1 s \(CENTERX_DOWNLOAD_TIMEOUT\)"):
            download(f"http://127.0.0.1:{silent.getsockname()[1]}/m.pth")
        assert time.monotonic() - start < 8
    finally:
        silent.close()
    assert _cached_files(tmp_path) == []


def test_a_server_that_stalls_mid_file_is_a_bounded_wait_and_caches_nothing(tmp_path, serve):
    url, _ = serve({"/big.pth": bytes(range(256)) * 1000}, {"/big.pth": "stall"})
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"broke off after 128000 bytes of 256000"):
        download(f"{url}/big.pth")
    assert time.monotonic() - start < 8
    assert _cached_files(tmp_path) == []


def test_a_download_cut_short_without_a_length_is_not_kept(tmp_path, serve):
    """No Content-Length and the connection closed half-way: only loading the file
    can tell. It is refused, nothing is cached, and the next run fetches again."""
    buffer = io.BytesIO()
    torch.save({"model": randomize_(build_model(tiny_cfg("CenterNet")), seed=1).state_dict()}, buffer)
    url, httpd = serve({"/cut.pth": buffer.getvalue()}, {"/cut.pth": "no-length"})
    for _attempt in range(2):
        with pytest.raises(
            WeightsDownloadError,
            match=r"MODEL.WEIGHTS: '.*/cut.pth' gave \d+ bytes that are not a "
            r"usable file .*nothing was cached",
        ):
            local_weights_path(f"{url}/cut.pth")
        assert _cached_files(tmp_path) == []
    assert httpd.log == ["/cut.pth", "/cut.pth"]


def test_a_file_that_changes_on_its_server_is_fetched_again(serve, monkeypatch):
    url, httpd = serve({"/m.pth": b"version 1"})
    first = download(f"{url}/m.pth")
    assert _read(download(f"{url}/m.pth")) == b"version 1"  # unchanged: 304, the cached copy
    httpd.files["/m.pth"] = b"version 2"
    assert _read(download(f"{url}/m.pth")) == b"version 2"
    assert download(f"{url}/m.pth") == first  # same cache entry, new content
    monkeypatch.setenv("CENTERX_DOWNLOAD_REFRESH", "1")
    download(f"{url}/m.pth")
    assert httpd.log == ["/m.pth"] * 5


def test_an_unreachable_server_falls_back_to_the_cached_copy(serve, caplog):
    url, httpd = serve({"/m.pth": b"kept"})
    download(f"{url}/m.pth")
    httpd.shutdown()
    httpd.server_close()
    assert _read(download(f"{url}/m.pth")) == b"kept"
    assert "cannot be reached to check for a newer file" in caplog.text


def test_an_expected_hash_is_checked_before_use(tmp_path, serve):
    body = b"the weights"
    digest = hashlib.sha256(body).hexdigest()
    url, httpd = serve({"/m.pth": body})
    with pytest.raises(DownloadError, match=f"sha256 is {digest}, not the deadbeef the URL asks for"):
        download(f"{url}/m.pth#sha256=deadbeef")
    assert _cached_files(tmp_path) == []
    assert _read(download(f"{url}/m.pth#sha256={digest[:10]}")) == body
    httpd.files["/m.pth"] = b"tampered"
    with pytest.raises(DownloadError, match="not the"):
        download(f"{url}/m.pth#sha256={digest[:10]}")
    with pytest.raises(DownloadError, match="is not '#sha256=<8 to 64 hex digits>'"):
        download(f"{url}/m.pth#md5=00")
    assert os.environ["CENTERX_DOWNLOAD_TIMEOUT"] == "1"
