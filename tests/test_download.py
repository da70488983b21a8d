"""train.recipe.download against a real local HTTP server (tests/range_server.py) serving
small archives in COCO's and Karpathy's original layouts (tests/recipe_archives.py)."""
import os
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT
from edge.errors import NanocapError
from range_server import RangeServer
from recipe_archives import make_coco_archives, write_checksums
from train.recipe import download


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("served"))
    return folder, make_coco_archives(folder)


def test_fetch_resumes_a_cut_download_with_range(archives, tmp_path):
    served, sums = archives
    name = "train2014.zip"
    with RangeServer(served) as server:
        server.cut[name] = 5000
        dest = str(tmp_path / name)
        with pytest.raises(NanocapError, match="train2014.zip: download cut at 5000 bytes"):
            download.fetch(server.url + "/" + name, dest, digest="sha256:" + sums[name],
                           retries=0, progress=False, log=lambda *a: None)
        assert os.path.getsize(dest + ".part") == 5000 and not os.path.exists(dest)
        got = download.fetch(server.url + "/" + name, dest, digest="sha256:" + sums[name],
                             retries=0, progress=False, log=lambda *a: None)
        assert server.requests == [(name, None), (name, "bytes=5000-")]
    assert got == "sha256:" + sums[name]
    assert open(dest, "rb").read() == open(os.path.join(served, name), "rb").read()
    assert not os.path.exists(dest + ".part")


def test_fetch_retries_a_cut_connection_by_itself(archives, tmp_path):
    served, sums = archives
    name = "val2014.zip"
    size = os.path.getsize(os.path.join(served, name))
    with RangeServer(served) as server:
        server.cut[name] = 3000
        dest = str(tmp_path / name)
        download.fetch(server.url + "/" + name, dest, size=size, digest=sums[name], retries=2,
                       wait=0.0, progress=False, log=lambda *a: None)
        assert server.requests == [(name, None), (name, "bytes=3000-")]
    assert download.file_digest(dest) == sums[name]


def test_a_whole_part_file_is_finished_without_downloading_again(archives, tmp_path):
    """A part already whole (cut just before the rename): the server answers 416."""
    served, sums = archives
    name = "caption_datasets.zip"
    dest = str(tmp_path / name)
    with open(os.path.join(served, name), "rb") as src, open(dest + ".part", "wb") as out:
        out.write(src.read())
    with RangeServer(served) as server:
        download.fetch(server.url + "/" + name, dest, digest=sums[name], progress=False,
                       log=lambda *a: None)
        assert len(server.requests) == 1 and server.requests[0][1].startswith("bytes=")
    assert download.file_digest(dest) == sums[name]


def test_checksum_mismatch_is_one_line_naming_the_file(archives, tmp_path):
    served, sums = archives
    wrong = dict(sums, **{"train2014.zip": "0" * 64})
    checksums = write_checksums(str(tmp_path / "SHA256SUMS"), wrong)
    root = tmp_path / "data"
    with RangeServer(served) as server:
        proc = subprocess.run([sys.executable, "-m", "train", "recipe", "coco", "--root", str(root),
                               "--out", str(tmp_path / "run"), "--base-url", server.url,
                               "--checksums", checksums, "--until", "download", "--no-progress"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "train2014.zip: checksum mismatch" in lines[0] and sums["train2014.zip"] in lines[0]
    # the bad file is kept aside, nothing half-written stands in for the archive
    assert (root / "train2014.zip.corrupt").is_file() and not (root / "train2014.zip").exists()
    assert (root / "caption_datasets.zip").is_file()  # fetched and checked before it


def test_a_wrong_size_from_the_server_is_refused_before_downloading(archives, tmp_path):
    served, _ = archives
    with RangeServer(served) as server:
        with pytest.raises(NanocapError, match="offers .* bytes, expected 13510573713"):
            download.fetch(server.url + "/train2014.zip", str(tmp_path / "train2014.zip"),
                           size=13510573713, progress=False, log=lambda *a: None)


def test_extract_resumes_and_refuses_paths_outside(tmp_path):
    archive = str(tmp_path / "a.zip")
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("top/one.txt", "1")
        handle.writestr("top/two.txt", "22")
        handle.writestr("__MACOSX/top/._one.txt", "x")
    dest = str(tmp_path / "out")
    assert download.extract(archive, dest, progress=False) == 2
    assert sorted(os.listdir(os.path.join(dest, "top"))) == ["one.txt", "two.txt"]
    os.remove(os.path.join(dest, "top", "two.txt"))
    assert download.extract(archive, dest, progress=False) == 1  # only what is missing
    evil = str(tmp_path / "evil.zip")
    with zipfile.ZipFile(evil, "w") as handle:
        handle.writestr("../escaped.txt", "no")
    with pytest.raises(NanocapError, match="would land outside"):
        download.extract(evil, dest, progress=False)
    assert not (tmp_path / "escaped.txt").exists()
    with open(str(tmp_path / "junk.zip"), "wb") as handle:
        handle.write(b"this is no archive")
    with pytest.raises(NanocapError, match="not a readable zip or tar archive"):
        download.extract(str(tmp_path / "junk.zip"), dest, progress=False)
