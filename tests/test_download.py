"""reslab.download against real local servers: a server that accepts and never answers gives up
within the timeout after a bounded number of attempts, a missing file is not retried, and the
datasets and weights downloads go through it with a message that says what to do."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import tarfile
import threading

import pytest

from reslab.data import fashion_mnist as fm
from reslab.download import DownloadError, download_and_extract, download_file
from reslab.errors import DataError, WeightsError
from reslab.models.catalog import WeightMeta
from reslab.models.fetch import _torch_hub_file


class SilentServer:
    """Accepts every connection on 127.0.0.1 and never sends a byte; counts connections."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.accepted.append(conn)  # kept open, never answered
            except OSError:
                continue

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        for c in self.accepted:
            c.close()
        self.sock.close()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
def http_folder(tmp_path):
    """A real HTTP server over a folder; yields (folder, base URL, list of request paths)."""
    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_request(self, *args):
            requests.append(self.path)

        def log_message(self, *args):  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/", requests
    server.shutdown()
    server.server_close()


def _bounded(fn, limit_s: float = 30.0):
    """Runs ``fn`` in a thread; fails the test (instead of hanging it) if it never returns."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit_s)
    assert not t.is_alive(), "the download is still waiting on a silent server"
    return box


def test_silent_server_gives_up_after_bounded_attempts(tmp_path):
    dest = tmp_path / "out" / "file.bin"
    with SilentServer() as server:
        box = _bounded(lambda: download_file(server.url("file.bin"), dest, timeout=0.5,
                                             attempts=2, backoff=0.05))
        connections = len(server.accepted)
    err = box.get("error")
    assert isinstance(err, DownloadError), box
    msg = str(err)
    assert server.url("file.bin") in msg and "timed out" in msg and "2 attempts" in msg
    assert str(dest) in msg  # what to do: place the file there by hand
    assert connections == 2
    assert not dest.exists() and not list(dest.parent.glob(".*part"))


def test_missing_file_is_not_retried_and_a_found_one_is_kept(http_folder, tmp_path):
    root, base, requests = http_folder
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        download_file(base + "nope.bin", tmp_path / "nope.bin", attempts=3, backoff=0.01)
    assert "(1 attempt)" in str(err.value) and len(requests) == 1
    (root / "w.bin").write_bytes(b"weights")
    sha = hashlib.sha256(b"weights").hexdigest()
    got = download_file(base + "w.bin", tmp_path / "w.bin", sha256_prefix=sha[:8])
    assert got.read_bytes() == b"weights"


def test_environment_sets_timeout_and_attempts(monkeypatch, tmp_path):
    monkeypatch.setenv("RESLAB_DOWNLOAD_TIMEOUT", "0.3")
    monkeypatch.setenv("RESLAB_DOWNLOAD_ATTEMPTS", "1")
    with SilentServer() as server:
        box = _bounded(lambda: download_file(server.url("x"), tmp_path / "x"))
        assert len(server.accepted) == 1
    assert "no answer within 0.3 s" in str(box["error"])
    monkeypatch.setenv("RESLAB_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(DataError, match="RESLAB_DOWNLOAD_TIMEOUT='soon'"):
        download_file("http://127.0.0.1:9/x", tmp_path / "x")


def test_fashion_mnist_mirror_that_never_answers(monkeypatch, tmp_path):
    monkeypatch.setenv("RESLAB_DOWNLOAD_TIMEOUT", "0.3")
    monkeypatch.setenv("RESLAB_DOWNLOAD_ATTEMPTS", "2")
    with SilentServer() as server:
        box = _bounded(lambda: fm._download(tmp_path / "fm", mirrors=(server.url(""),)))
    err = box.get("error")
    assert isinstance(err, OSError), box  # what locate() turns into its three-ways message
    assert "timed out" in str(err) and "train-images-idx3-ubyte.gz" in str(err)


def test_torchvision_weights_download_through_it(monkeypatch, tmp_path, http_folder):
    root, base, _ = http_folder
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    payload = b"not really weights"
    name = f"resnet18-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    (root / name).write_bytes(payload)
    meta = WeightMeta(source="torchvision:resnet18.TEST", architecture="resnet18",
                      layout="torchvision", url=base + name)
    path = _torch_hub_file(meta, True, None)
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / name
    assert path.read_bytes() == payload
    # the file name's SHA-256 prefix is checked: a different file is not kept
    (root / "resnet34-00000000.pth").write_bytes(payload)
    bad = WeightMeta(source="torchvision:resnet34.TEST", architecture="resnet34",
                     layout="torchvision", url=base + "resnet34-00000000.pth")
    with pytest.raises(WeightsError, match="sha256"):
        _torch_hub_file(bad, True, None)
    # a silent server: the error names the URL, what happened and the cache path to fill
    monkeypatch.setenv("RESLAB_DOWNLOAD_TIMEOUT", "0.3")
    monkeypatch.setenv("RESLAB_DOWNLOAD_ATTEMPTS", "1")
    with SilentServer() as server:
        silent = WeightMeta(source="torchvision:resnet50.TEST", architecture="resnet50",
                            layout="torchvision", url=server.url("resnet50-11ad3fa6.pth"))
        box = _bounded(lambda: _torch_hub_file(silent, True, None))
    msg = str(box["error"])
    assert isinstance(box["error"], WeightsError)
    assert "timed out" in msg and "curl -L" in msg
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth") in msg


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_archive_is_checked_and_unpacked_inside_its_folder(http_folder, tmp_path):
    root, base, requests = http_folder
    data = _tar_gz({"cifar-10-batches-py/data_batch_1": b"abc"})
    (root / "c.tar.gz").write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    download_and_extract(base + "c.tar.gz", tmp_path / "c", md5=md5)
    assert (tmp_path / "c" / "cifar-10-batches-py" / "data_batch_1").read_bytes() == b"abc"
    download_and_extract(base + "c.tar.gz", tmp_path / "c", md5=md5)  # kept: no second request
    assert len(requests) == 1
    evil = _tar_gz({"../escaped": b"x"})
    (root / "evil.tar.gz").write_bytes(evil)
    with pytest.raises(Exception, match="outside|escaped"):
        download_and_extract(base + "evil.tar.gz", tmp_path / "e",
                             md5=hashlib.md5(evil).hexdigest())
    assert not (tmp_path / "escaped").exists()
