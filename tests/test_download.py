"""Downloads against a local HTTP server that understands Range requests."""
from __future__ import annotations

import functools
import hashlib
import io
import os
import socket
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from nolabel.data import download as dl
from nolabel.data.download import DownloadError, Resource, download, extract_archive, fetch_benchmark
from nolabel.errors import NolabelError


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files whole (200) or from ``Range: bytes=N-`` (206 / 416), recording each Range header."""

    def do_GET(self) -> None:
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, "rb") as f:
            data = f.read()
        wanted = self.headers.get("Range")
        self.server.requests.append(wanted)
        if wanted and self.server.honour_range:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(served)))
    httpd.requests, httpd.honour_range = [], True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.folder = served
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


PAYLOAD = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


def test_full_download_with_checksums(server, tmp_path):
    (server.folder / "blob.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "blob.bin"
    assert download(server.url + "blob.bin", dest, sha256=SHA256, md5=MD5, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD and not dest.with_name("blob.bin.part").exists()
    assert server.requests == [None]
    download(server.url + "blob.bin", dest, md5=MD5, progress=False)  # already there: no request
    assert server.requests == [None]


def test_partial_download_resumes_with_range(server, tmp_path):
    (server.folder / "blob.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(PAYLOAD[:12_345])
    download(server.url + "blob.bin", dest, md5=MD5, progress=False)
    assert server.requests == ["bytes=12345-"]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts(server, tmp_path):
    (server.folder / "blob.bin").write_bytes(PAYLOAD)
    server.honour_range = False
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"stale bytes from another file")
    download(server.url + "blob.bin", dest, sha256=SHA256, progress=False)
    assert server.requests == ["bytes=29-"] and dest.read_bytes() == PAYLOAD


def test_complete_part_answered_416_is_kept(server, tmp_path):
    (server.folder / "blob.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(PAYLOAD)
    download(server.url + "blob.bin", dest, md5=MD5, progress=False)
    assert server.requests == [f"bytes={len(PAYLOAD)}-"] and dest.read_bytes() == PAYLOAD


def test_wrong_checksum_deletes_everything(server, tmp_path):
    (server.folder / "blob.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "blob.bin"
    with pytest.raises(NolabelError, match="checksum mismatch .*md5 .*expected 0{32}"):
        download(server.url + "blob.bin", dest, md5="0" * 32, progress=False)
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_and_missing_urls_say_where_to_put_the_file(server, tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/cifar-10-python.tar.gz"
    with pytest.raises(DownloadError, match=f"could not download {url} .*; put cifar-10-python.tar.gz in {tmp_path} yourself"):
        download(url, tmp_path / "cifar-10-python.tar.gz", progress=False, timeout=5)
    with pytest.raises(NolabelError, match="HTTP 404"):
        download(server.url + "absent.bin", tmp_path / "absent.bin", progress=False)


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_fetch_benchmark_tries_mirrors_and_unpacks_once(server, tmp_path, monkeypatch):
    archive = _tar_gz({"bench/a.txt": b"alpha", "bench/sub/b.txt": b"beta"})
    (server.folder / "bench.tar.gz").write_bytes(archive)
    resource = Resource(
        "bench.tar.gz",
        (f"http://127.0.0.1:{_closed_port()}/bench.tar.gz", server.url + "bench.tar.gz"),
        hashlib.md5(archive).hexdigest(),
        folder="bench",
    )
    monkeypatch.setitem(dl.SOURCES, "bench", (resource,))
    root = tmp_path / "root"
    assert fetch_benchmark("bench", root, progress=False) == root
    assert (root / "bench" / "sub" / "b.txt").read_bytes() == b"beta"
    assert not [p for p in root.iterdir() if p.name.startswith(".extract-")]
    fetch_benchmark("bench", root, progress=False)
    assert server.requests == [None]
    with pytest.raises(NolabelError, match="no download source for 'imagenet'"):
        fetch_benchmark("imagenet", root)


def test_official_sources_table():
    assert dl.SOURCES["cifar10"][0].md5 == "c58f30108f718f92721af3b95e74349a"
    assert dl.SOURCES["cifar100"][0].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert dl.SOURCES["stl10"][0].md5 == "91f7769df0f17e558f3565bffb0c7dfb"
    mnist = {r.filename: r.md5 for r in dl.SOURCES["mnist"]}
    assert mnist["t10k-images-idx3-ubyte.gz"] == "9fb629c4189551a2d022fa330f9573f3"
    assert mnist["t10k-labels-idx1-ubyte.gz"] == "ec29112dd5afa0611ce80d1b7f02629c"
    assert all(url.endswith(r.filename) for rs in dl.SOURCES.values() for r in rs for url in r.urls)


def test_extract_refuses_paths_outside(tmp_path):
    (tmp_path / "evil.tar.gz").write_bytes(_tar_gz({"ok.txt": b"fine", "../escaped.txt": b"bad"}))
    dest = tmp_path / "dest"
    with pytest.raises(NolabelError, match="unsafe path '../escaped.txt'"):
        extract_archive(tmp_path / "evil.tar.gz", dest)
    assert not (tmp_path / "escaped.txt").exists() and list(dest.iterdir()) == []
    (tmp_path / "broken.tar.gz").write_bytes(_tar_gz({"a.txt": b"x" * 10_000})[:60])
    with pytest.raises(NolabelError, match="cannot unpack .*broken.tar.gz"):
        extract_archive(tmp_path / "broken.tar.gz", dest)
