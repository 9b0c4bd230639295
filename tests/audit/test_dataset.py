"""Manifest validation: every error names the column and the row; paths stay inside the folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceaudit.audit.dataset import LANDMARK_COLUMNS, load_dataset
from faceaudit.errors import InvalidRequest


def _folder(tmp_path: Path, manifest: str, images: tuple[str, ...] = ("a.png", "b.png", "c.png")) -> Path:
    for name in images:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name)
    (tmp_path / "manifest.csv").write_text(manifest, encoding="utf-8")
    return tmp_path


def test_reads_rows_groups_and_landmarks(tmp_path: Path) -> None:
    header = ",".join(["image", "class", "group", *LANDMARK_COLUMNS])
    points = ",".join(str(v) for v in range(10))
    folder = _folder(tmp_path, f"{header}\na.png,1,x,{points}\nb.png,0,y,{points}\nc.png,1,x,{points}\n\n")
    data = load_dataset(folder)
    assert [e.name for e in data.entries] == ["a.png", "b.png", "c.png"]
    assert [e.class_index for e in data.entries] == [1, 0, 1]
    assert data.group_column == "group" and data.groups() == {"x": 2, "y": 1}
    assert data.entries[0].landmarks.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert len(data.manifest_sha256) == 64
    data.check_classes(2)
    with pytest.raises(InvalidRequest, match=r"manifest.csv\[row 1\].class"):
        data.check_classes(1)


@pytest.mark.parametrize(("manifest", "field"), [
    ("image,class\na.png,1\nb.png,x\n", r"manifest.csv\[row 2\].class"),
    ("image,class\na.png,1\nb.png,-1\n", r"manifest.csv\[row 2\].class"),
    ("image,class\na.png,1\nmissing.png,0\n", r"manifest.csv\[row 2\].image"),
    ("image,class\n../a.png,1\n", r"manifest.csv\[row 1\].image"),
    ("image,class\n/etc/passwd,1\n", r"manifest.csv\[row 1\].image"),
    ("image,class\n,1\n", r"manifest.csv\[row 1\].image"),
    ("image,class,group\na.png,1,x\nb.png,0,\n", r"manifest.csv\[row 2\].group"),
    ("image,identity\na.png,p\nb.png,\n", r"manifest.csv\[row 2\].identity"),
    ("image,class\na.png,1,extra\n", r"manifest.csv\[row 1\]"),
    ("image,class,x1,y1\na.png,1,2,3\n", r"manifest.csv.x2"),
    ("image,label\na.png,1\n", r"manifest.csv.class"),
    ("picture,class\na.png,1\n", r"manifest.csv.image"),
    ("image,class,class\na.png,1,1\n", r"manifest.csv.class"),
    ("image,identity,inpainted_probe\na.png,p,b.png\n", r"manifest.csv.mate"),
])
def test_errors_name_column_and_row(tmp_path: Path, manifest: str, field: str) -> None:
    with pytest.raises(InvalidRequest, match=field):
        load_dataset(_folder(tmp_path, manifest))


def test_landmark_cells_are_checked(tmp_path: Path) -> None:
    header = ",".join(["image", "class", *LANDMARK_COLUMNS])
    points = ["1"] * 10
    points[5] = "nan"
    with pytest.raises(InvalidRequest, match=r"manifest.csv\[row 1\].y3"):
        load_dataset(_folder(tmp_path, f"{header}\na.png,0,{','.join(points)}\n"))


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(outside)
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "link.png").symlink_to(outside)
    (folder / "manifest.csv").write_text("image,class\nlink.png,0\n", encoding="utf-8")
    with pytest.raises(InvalidRequest, match=r"row 1\].image: 'link.png' leads outside"):
        load_dataset(folder)


def test_group_column_must_exist(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="group_column"):
        load_dataset(_folder(tmp_path, "image,class\na.png,1\n"), group_column="skin")


def test_mates_and_non_mates_from_identity(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "image,identity\na.png,p\nb.png,q\nc.png,p\nd.png,q\n", ("a.png", "b.png", "c.png", "d.png"))
    pairs = [(m.name, n.name) for m, n in load_dataset(folder).pairs()]
    assert pairs == [("c.png", "b.png"), ("d.png", "c.png"), ("a.png", "d.png"), ("b.png", "a.png")]


def test_identity_without_a_mate(tmp_path: Path) -> None:
    data = load_dataset(_folder(tmp_path, "image,identity\na.png,p\nb.png,q\nc.png,q\n"))
    with pytest.raises(InvalidRequest, match=r"row 1\].identity: 'p' has no other image"):
        data.pairs()
