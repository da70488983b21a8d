"""The bundle is checked as a whole; images and frames are bounded before decoding."""
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest

import edge.image
from edge.backends import OrtBackend
from edge.bundle import load_bundle, sha256_file
from edge.errors import NanocapError
from edge.image import read_image
from edge.sources import open_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _copy(tiny_bundle, tmp_path, edit):
    """A copy of the bundle with ``edit(meta, folder)`` applied to its nanocap.json."""
    folder = str(tmp_path / "b")
    shutil.copytree(tiny_bundle, folder)
    path = os.path.join(folder, "nanocap.json")
    meta = json.load(open(path))
    edit(meta, folder)
    json.dump(meta, open(path, "w"))
    return folder


def _edge_rc(args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-m", "edge"] + args + ["--headless"], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=120)
    return result.returncode, result.stderr.strip().splitlines()


def test_a_bundle_without_files_is_refused_even_by_the_cli(tiny_bundle, tmp_path):
    def edit(meta, folder):
        del meta["files"]
        with open(os.path.join(folder, "caption.onnx"), "ab") as handle:
            handle.write(b"edited")       # no checksum would have caught this
    folder = _copy(tiny_bundle, tmp_path, edit)
    with pytest.raises(NanocapError, match="lists no files with their sha256"):
        load_bundle(folder)
    code, lines = _edge_rc(["synthetic://", "--bundle", folder, "--max-frames", "1"],
                           str(tmp_path))
    assert code == 2 and len(lines) == 1 and "lists no files" in lines[0], lines


def test_every_graph_needs_its_checksum(tiny_bundle, tmp_path):
    folder = _copy(tiny_bundle, tmp_path, lambda meta, _: meta["files"].pop("encoder.onnx"))
    with pytest.raises(NanocapError, match="encoder.onnx has no sha256"):
        load_bundle(folder)


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_names_stay_inside_the_bundle(tiny_bundle, tmp_path, how):
    outside = str(tmp_path / "outside.onnx")
    shutil.copy(os.path.join(tiny_bundle, "caption.onnx"), outside)
    digest = sha256_file(outside)

    def edit(meta, folder):
        if how == "symlink":      # same name, same bytes, but a link out of the folder
            os.remove(os.path.join(folder, "caption.onnx"))
            os.symlink(outside, os.path.join(folder, "caption.onnx"))
            return
        name = "../outside.onnx" if how == "dotdot" else outside
        meta["graphs"]["caption"]["fp32"]["file"] = name
        meta["files"].pop("caption.onnx")
        meta["files"][name] = digest
    folder = _copy(tiny_bundle, tmp_path, edit)
    with pytest.raises(NanocapError, match="not a file inside the bundle"):
        load_bundle(folder)


def test_the_vocabulary_must_match_the_graphs(tiny_bundle, tmp_path):
    folder = _copy(tiny_bundle, tmp_path, lambda meta, _: meta["vocab"]["words"].pop())
    with pytest.raises(NanocapError, match="vocabulary has 18 words but decoder_step.onnx"):
        load_bundle(folder)

    def lie(meta, _):            # nanocap.json made consistent, the graph still says 19
        meta["vocab"]["words"].pop()
        meta["graphs"]["decoder_step"]["fp32"]["outputs"][0]["shape"][-1] = 18
    shutil.rmtree(folder)
    folder = _copy(tiny_bundle, tmp_path, lie)
    bundle = load_bundle(folder)
    OrtBackend(bundle, decode="greedy").close()      # the caption graph shows no V
    with pytest.raises(NanocapError, match="18 words but .*decoder_step.onnx gives logprobs "
                                           "over 19"):
        OrtBackend(bundle, decode="beam")


def _png_bomb(path, width, height):
    """A valid 1-bit grey PNG of ``width`` x ``height`` zeros: a few KiB on disk."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    row = b"\0" * (1 + (width + 7) // 8)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(row * height, 9)) + chunk(b"IEND", b""))


def test_huge_images_are_refused_before_decoding(tiny_bundle, tmp_path):
    bomb = str(tmp_path / "bomb.png")
    _png_bomb(bomb, 8000, 8000)            # 27 KB, 192 MB once decoded as BGR
    assert os.path.getsize(bomb) < 100000
    with pytest.raises(NanocapError, match=r"bomb.png is 8000x8000 pixels, more than the 50"):
        read_image(bomb)
    code, lines = _edge_rc([bomb, "--bundle", tiny_bundle], str(tmp_path))
    assert code == 2 and len(lines) == 1 and "bomb.png is 8000x8000" in lines[0], lines
    small = str(tmp_path / "small.jpg")
    cv2.imwrite(small, np.zeros((48, 64, 3), np.uint8))
    assert read_image(small).shape == (48, 64, 3)
    with pytest.raises(NanocapError, match="64x48 pixels"):
        read_image(small, max_pixels=64 * 48 - 1)


def test_huge_video_frames_are_refused_before_the_first_read(tmp_path, monkeypatch):
    path = str(tmp_path / "v.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    open_source(path).close()
    monkeypatch.setattr(edge.image, "MAX_PIXELS", 64 * 48 - 1)
    with pytest.raises(NanocapError, match="each frame of video file .*v.avi is 64x48 pixels"):
        open_source(path)
