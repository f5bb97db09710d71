"""Built-in public datasets, addressed in confs as dataset://<name>/<file>.

Resolution order for a dataset directory:
  1. $COLLM_DATA_DIR/<name>/ when COLLM_DATA_DIR is set (CI points it at ../shared/datasets);
  2. the cache, $COLLM_CACHE_DIR/datasets/<name>/ (default ~/.cache/collm/datasets/<name>/);
  3. a download from the publisher into that cache, checked against known MD5 sums.
Offline with nothing cached, the error says what to set. No dataset file ships with the project.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path


class DatasetError(RuntimeError):
    pass


@dataclass(frozen=True)
class Dataset:
    name: str
    url: str
    md5: dict  # file name -> md5 of the files we read; verified after a download


DATASETS = {
    "ml-100k": Dataset(
        name="ml-100k",
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        md5={"u.data": "6e47046882bad158b0efbb84cd5cb987", "u.item": "c9e7f390115d79079537301d5204f3f7"},
    ),
    # GroupLens' "latest small" (generated 2018-09-26): 610 users over 22 years, sparse recent weeks
    "ml-latest-small": Dataset(
        name="ml-latest-small",
        url="https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
        md5={"ratings.csv": "325a6f09399d1c45671f187505e1a100", "movies.csv": "ed94fab72b62442ef8150d9446e000d6"},
    ),
}

SCHEME = "dataset://"


def cache_dir() -> Path:
    base = os.environ.get("COLLM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "collm")
    return Path(base) / "datasets"


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _complete(d: Path, ds: Dataset) -> bool:
    return all((d / f).is_file() for f in ds.md5)


def dataset_dir(name: str, download: bool = True, timeout_s: float = 30.0) -> Path:
    """Local directory of a built-in dataset (see module doc for the resolution order)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; built-in datasets: {', '.join(sorted(DATASETS))}")
    ds = DATASETS[name]
    env = os.environ.get("COLLM_DATA_DIR")
    if env:
        d = Path(env) / name
        if not _complete(d, ds):
            raise DatasetError(f"COLLM_DATA_DIR={env} is set but {d} lacks {', '.join(sorted(ds.md5))}")
        return d
    d = cache_dir() / name
    if _complete(d, ds):
        return d
    if not download:
        raise DatasetError(f"dataset {name} is not in {d}; set COLLM_DATA_DIR to a directory holding {name}/")
    _download(ds, d, timeout_s)
    return d


def _download(ds: Dataset, dest: Path, timeout_s: float) -> None:
    try:
        with urllib.request.urlopen(ds.url, timeout=timeout_s) as r:
            payload = r.read()
    except (urllib.error.URLError, OSError) as e:
        raise DatasetError(
            f"dataset {ds.name} is neither in COLLM_DATA_DIR (unset) nor cached in {dest}, and downloading "
            f"{ds.url} failed ({e}). Set COLLM_DATA_DIR to a directory that holds {ds.name}/ "
            f"(with {', '.join(sorted(ds.md5))}), or put the files in {dest}.") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Unpack into a temp dir beside the cache and rename: a half-written cache never looks complete.
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        with zipfile.ZipFile(io.BytesIO(payload)) as z:
            z.extractall(tmp)
        src = Path(tmp) / ds.name
        for f, want in ds.md5.items():
            got = _md5(src / f)
            if got != want:
                raise DatasetError(f"downloaded {ds.name}/{f} has md5 {got}, expected {want}")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(src, dest)


def resolve_uri(uri: str) -> str:
    """dataset://ml-100k/u.data -> /local/dir/ml-100k/u.data; any other path is returned unchanged."""
    if not uri.startswith(SCHEME):
        return uri
    rest = uri[len(SCHEME):]
    name, _, file = rest.partition("/")
    path = dataset_dir(name) / file
    if not path.is_file():
        raise DatasetError(f"{uri}: no file {file!r} in {path.parent}")
    return str(path)
