import http.server
import io
import threading
import zipfile

import pytest

from collm_udf import datasets
from collm_udf.datasets import DatasetError, dataset_dir, resolve_uri


def test_env_dir_wins(ml100k, monkeypatch):
    monkeypatch.setenv("COLLM_DATA_DIR", str(ml100k.parent))
    assert resolve_uri("dataset://ml-100k/u.data") == str(ml100k / "u.data")
    assert resolve_uri("/plain/path.csv") == "/plain/path.csv"


def test_env_dir_without_files_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLM_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetError, match="COLLM_DATA_DIR=.* lacks"):
        dataset_dir("ml-100k")


def test_offline_without_cache_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("COLLM_DATA_DIR", raising=False)
    monkeypatch.setenv("COLLM_CACHE_DIR", str(tmp_path))
    ds = datasets.DATASETS["ml-100k"]
    # port 9 (discard) on loopback: the connection is refused, as offline
    monkeypatch.setitem(datasets.DATASETS, "ml-100k",
                        datasets.Dataset(ds.name, "http://127.0.0.1:9/ml-100k.zip", ds.md5))
    with pytest.raises(DatasetError, match="Set COLLM_DATA_DIR"):
        dataset_dir("ml-100k", timeout_s=5)


@pytest.fixture
def zip_server(ml100k):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in ("u.data", "u.item"):
            z.write(ml100k / f, f"ml-100k/{f}")
    payload = buf.getvalue()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/ml-100k.zip"
    srv.shutdown()


def test_download_into_cache_then_reuse(zip_server, tmp_path, monkeypatch):
    monkeypatch.delenv("COLLM_DATA_DIR", raising=False)
    monkeypatch.setenv("COLLM_CACHE_DIR", str(tmp_path))
    ds = datasets.DATASETS["ml-100k"]
    monkeypatch.setitem(datasets.DATASETS, "ml-100k", datasets.Dataset(ds.name, zip_server, ds.md5))
    d = dataset_dir("ml-100k")
    assert d == tmp_path / "datasets" / "ml-100k" and (d / "u.data").is_file()
    # second call: served from the cache even with the network gone
    monkeypatch.setitem(datasets.DATASETS, "ml-100k",
                        datasets.Dataset(ds.name, "http://127.0.0.1:9/x.zip", ds.md5))
    assert dataset_dir("ml-100k") == d


def test_download_with_wrong_checksum_is_rejected(zip_server, tmp_path, monkeypatch):
    monkeypatch.delenv("COLLM_DATA_DIR", raising=False)
    monkeypatch.setenv("COLLM_CACHE_DIR", str(tmp_path))
    ds = datasets.DATASETS["ml-100k"]
    monkeypatch.setitem(datasets.DATASETS, "ml-100k",
                        datasets.Dataset(ds.name, zip_server, {**ds.md5, "u.data": "0" * 32}))
    with pytest.raises(DatasetError, match="md5"):
        dataset_dir("ml-100k")
    assert not (tmp_path / "datasets" / "ml-100k").exists()
