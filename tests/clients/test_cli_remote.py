"""`faceaudit explain --server`: the files written equal those of the same local command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from faceaudit.alignment.templates import arcface_for_frame
from faceaudit.cli.main import main
from faceaudit.testing import zoo

from tests.clients.conftest import DEMO_MODELS


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(2)
    # 80x70 (not the model's 64x64): the image is resized and the aspect-ratio warning is written
    Image.fromarray(rng.integers(0, 256, (70, 80, 3), dtype=np.uint8)).save(folder / "probe.png")
    for name in ("mate", "non_mate"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    onnx.save_model(zoo.planted_region_embedding(), folder / "emb.onnx")
    return folder


def explain_json(capsys, *argv: str) -> dict:
    assert main(["explain", "--quiet", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def assert_same_files(local: dict, remote: dict) -> None:
    for kind in ("npy", "png"):
        assert Path(local["files"][kind]).read_bytes() == Path(remote["files"][kind]).read_bytes(), kind
    mine, theirs = (json.loads(Path(s["files"]["json"]).read_text()) for s in (local, remote))
    assert mine.pop("timings").keys() == theirs.pop("timings").keys()
    assert theirs == mine  # as JSON values: a Struct carries 1.0 as 1
    for summary in (local, remote):
        summary.pop("seconds")
        summary.pop("files")
    assert remote == local


def test_remote_explain_writes_the_files_of_the_local_command(server, files, tmp_path, capsys):
    common = ["--model", str(DEMO_MODELS / "identity.onnx"), "--image", str(files / "probe.png"),
              "--method", "occlusion", "--patch", "16", "--stride", "8", "--fill", "blur"]
    local = explain_json(capsys, *common, "--out", str(tmp_path / "local"))
    remote = explain_json(capsys, *common, "--out", str(tmp_path / "remote"), "--server", f"127.0.0.1:{server.port}")
    assert local["warnings"] and "stretched" in local["warnings"][0]
    assert_same_files(local, remote)


def test_remote_embedding_explain_with_spec_flags_and_a_progress_bar(server, files, tmp_path, capsys):
    common = ["--model", str(files / "emb.onnx"), "--kind", "embedding", "--image", str(files / "mate.png"),
              "--mate", str(files / "mate.png"), "--non-mate", str(files / "non_mate.png"), "--method", "rise",
              "--masks", "64", "--seed", "4"]
    local = explain_json(capsys, *common, "--out", str(tmp_path / "local"))
    assert main(["explain", "--json", *common, "--out", str(tmp_path / "remote"),
                 "--server", f"127.0.0.1:{server.port}"]) == 0
    captured = capsys.readouterr()
    assert "rise" in captured.err and "64/64" in captured.err  # the progress bar drew the streamed progress
    assert_same_files(local, json.loads(captured.out))


def test_remote_cis_with_landmarks_writes_the_files_of_the_local_command(server, files, tmp_path, capsys):
    """--landmarks travel with the image (in its own pixels): the server aligns them as the local run does."""
    landmarks = tmp_path / "landmarks.json"
    landmarks.write_text(json.dumps((arcface_for_frame((70, 80)) + [1.0, -2.0]).tolist()))
    common = ["--model", str(DEMO_MODELS / "identity.onnx"), "--image", str(files / "probe.png"), "--method", "cis",
              "--target", "3", "--patch", "16", "--stride", "8", "--landmarks", str(landmarks)]
    local = explain_json(capsys, *common, "--out", str(tmp_path / "local"))
    remote = explain_json(capsys, *common, "--out", str(tmp_path / "remote"), "--server", f"127.0.0.1:{server.port}")
    assert_same_files(local, remote)
    assert main(["explain", *common, "--margin", "0.2", "--out", str(tmp_path / "x"),
                 "--server", f"127.0.0.1:{server.port}"]) == 2
    assert "margin" in capsys.readouterr().err


def test_a_model_named_on_the_server_is_taken_from_its_repository(server, files, tmp_path, capsys):
    summary = explain_json(capsys, "--model", "attribute", "--image", str(files / "probe.png"), "--method", "gradient",
                           "--target", "1", "--out", str(tmp_path), "--server", f"127.0.0.1:{server.port}")
    assert summary["target"] == {"class_index": 1} and np.load(summary["files"]["npy"]).shape == (64, 64)


def test_remote_errors_exit_2_with_the_status_and_the_field(server, files, tmp_path, capsys):
    argv = ["explain", "--quiet", "--model", str(DEMO_MODELS / "identity.onnx"), "--image", str(files / "probe.png"),
            "--out", str(tmp_path), "--server", f"127.0.0.1:{server.port}"]
    assert main([*argv, "--method", "occlusion", "--patch", "0"]) == 2
    assert "INVALID_ARGUMENT: patch" in capsys.readouterr().err
    assert main([*argv, "--method", "gradient", "--mate", str(files / "mate.png")]) == 2
    assert "mate: a classifier is explained for a class" in capsys.readouterr().err
    assert main([*argv, "--method", "gradient", "--exact"]) == 2
    assert "exact: --exact applies to local runs" in capsys.readouterr().err
    assert main([*argv[:-1], "no-port", "--method", "gradient"]) == 2
    assert "server: 'no-port' is not HOST:PORT" in capsys.readouterr().err
    assert main([*argv[:2], "--model", "never-registered", *argv[4:], "--method", "gradient"]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err
