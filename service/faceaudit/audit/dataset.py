"""An audit dataset: a folder of face images plus a CSV manifest describing them.

Reads only the manifest and checks that the files it names exist inside the folder; images are
decoded later, by the audit. The manifest (`manifest.csv` by default, UTF-8, one header row) has:

    image                 required; path of the face, relative to the folder
    class                 integer class index the image is explained for (classifiers)
    identity              identity name (embedding models: mates and non-mates are drawn from it)
    <group column>        optional group attribute (default column name: `group`), e.g. skin tone
    x1,y1,...,x5,y5       optional five landmarks in the image file's pixels, (0, 0) the centre of the
                          top-left pixel, ArcFace order: left eye, right eye, nose tip, left and right
                          mouth corners (as seen in the image); all ten columns or none
    mate, non_mate        optional image paths: the probe's mate and non-mate (embedding models);
                          without them the mate is the next row of the same identity and the
                          non-mate the next row of another identity (manifest order, wrapping round)
    region                optional mask image (non-zero = inside): a ground-truth region of the image
                          (pointing game; the inpainted region of a quadruplet)
    inpainted_probe,      optional image paths: with `image` (original probe), `mate` (original mate)
    inpainted_non_mate    and `region` they form an inpainting-game quadruplet; the row's non-mate is
                          then its inpainted non-mate (a `non_mate` cell must be empty or the same)

Landmarks are ten numeric columns rather than a JSON string so that spreadsheets and pandas write
them without quoting. Other columns are ignored (and listed). Every error names the column and the
row (data rows count from 1, the header is not a row). Paths must stay inside the folder: absolute
paths, `..` escapes and symlinks leading out are refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceaudit.errors import InvalidRequest, LimitExceeded

MANIFEST = "manifest.csv"
MAX_ROWS = 100_000
MAX_MANIFEST_BYTES = 64 << 20
LANDMARK_COLUMNS = tuple(f"{axis}{k}" for k in range(1, 6) for axis in ("x", "y"))
PATH_COLUMNS = ("image", "mate", "non_mate", "region", "inpainted_probe", "inpainted_non_mate")
QUADRUPLET_COLUMNS = ("mate", "region", "inpainted_probe", "inpainted_non_mate")
KNOWN_COLUMNS = frozenset({*PATH_COLUMNS, "class", "identity", *LANDMARK_COLUMNS})


@dataclass(frozen=True, eq=False)
class Entry:
    """One manifest row, validated; paths are resolved inside the dataset folder."""

    row: int  # data row number, from 1
    name: str  # the image path relative to the folder, with forward slashes
    image: Path
    class_index: int | None = None
    identity: str | None = None
    group: str | None = None
    landmarks: np.ndarray | None = None  # (5, 2) x, y in the image file's pixels
    mate: Path | None = None
    non_mate: Path | None = None
    region: Path | None = None
    inpainted_probe: Path | None = None
    inpainted_non_mate: Path | None = None

    @property
    def is_quadruplet(self) -> bool:
        return self.inpainted_probe is not None


@dataclass(frozen=True, eq=False)
class Dataset:
    folder: Path
    manifest: Path
    manifest_sha256: str
    columns: tuple[str, ...]
    entries: tuple[Entry, ...]
    group_column: str | None
    ignored_columns: tuple[str, ...]

    @property
    def has_landmarks(self) -> bool:
        return self.entries[0].landmarks is not None

    def groups(self) -> dict[str, int]:
        """Images per value of the group attribute, in order of first appearance ({} without one)."""
        return dict(Counter(e.group for e in self.entries if e.group is not None))

    def field(self, entry: Entry, column: str) -> str:
        """How errors name one cell: `manifest.csv[row 3].class`."""
        return f"{self.manifest.name}[row {entry.row}].{column}"

    def check_classes(self, classes: int) -> None:
        """Every row has a class index below `classes` (a classifier's output size)."""
        if "class" not in self.columns:
            raise InvalidRequest(f"{self.manifest.name}.class", "a classifier audit needs a 'class' column "
                                                                "(the class index each image is explained for)")
        for entry in self.entries:
            if entry.class_index is None or entry.class_index >= classes:
                raise InvalidRequest(self.field(entry, "class"), f"{entry.class_index!r} is not a class index of "
                                                                 f"this model (0..{classes - 1})")

    def pairs(self) -> list[tuple[Path, Path | None]]:
        """(mate, non-mate) of every row for embedding models: the row's columns, else drawn from
        `identity` (next row of the same identity; next row of another identity, wrapping round)."""
        pairs = []
        count = len(self.entries)
        for i, entry in enumerate(self.entries):
            following = [self.entries[(i + k) % count] for k in range(1, count)]
            mate, non_mate = entry.mate, entry.non_mate or entry.inpainted_non_mate
            if mate is None:
                if entry.identity is None:
                    raise InvalidRequest(self.field(entry, "mate"), "an embedding audit needs a 'mate' image or an "
                                                                    "'identity' to find one")
                mate = next((e.image for e in following if e.identity == entry.identity), None)
                if mate is None:
                    raise InvalidRequest(self.field(entry, "identity"), f"{entry.identity!r} has no other image to "
                                                                        "serve as the mate: add one or a 'mate' column")
            if non_mate is None and entry.identity is not None:
                non_mate = next((e.image for e in following if e.identity not in (None, entry.identity)), None)
            pairs.append((mate, non_mate))
        return pairs


def load_dataset(folder: str | Path, *, manifest: str = MANIFEST, group_column: str | None = None) -> Dataset:
    """Read and validate `folder/manifest`. `group_column` defaults to `group` when that column exists."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidRequest("dataset", f"{root} is not a folder")
    root = root.resolve()
    path = _inside(root, manifest, "manifest")
    data = path.read_bytes()
    if len(data) > MAX_MANIFEST_BYTES:
        raise LimitExceeded(f"manifest: {len(data):,} bytes is above the limit of {MAX_MANIFEST_BYTES:,}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("manifest", f"{path.name} is not UTF-8 text ({exc})") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [name.strip() for name in next(reader, [])]
    columns = _check_header(header, path.name, group_column)
    if group_column is None and "group" in columns:
        group_column = "group"
    entries = []
    for number, values in enumerate(reader, start=1):
        if not any(v.strip() for v in values):
            continue  # blank lines (a trailing newline) are not rows
        if number > MAX_ROWS:
            raise LimitExceeded(f"manifest: more than {MAX_ROWS:,} rows")
        if len(values) != len(header):
            raise InvalidRequest(f"{path.name}[row {number}]", f"has {len(values)} fields, the header has {len(header)}")
        cells = {name: value.strip() for name, value in zip(header, values)}
        entries.append(_entry(root, path.name, number, cells, columns, group_column))
    if not entries:
        raise InvalidRequest("manifest", f"{path.name} has no rows")
    ignored = tuple(c for c in columns if c not in KNOWN_COLUMNS and c != group_column)
    return Dataset(root, path, hashlib.sha256(data).hexdigest(), tuple(columns), tuple(entries), group_column, ignored)


def _check_header(header: list[str], name: str, group_column: str | None) -> list[str]:
    if not header or header == [""]:
        raise InvalidRequest("manifest", f"{name} is empty: it needs a header row with at least 'image'")
    for column, count in Counter(header).items():
        if count > 1:
            raise InvalidRequest(f"{name}.{column}", "the column appears more than once in the header")
    if "image" not in header:
        raise InvalidRequest(f"{name}.image", f"the manifest needs an 'image' column; it has {', '.join(header)}")
    if "class" not in header and "identity" not in header:
        raise InvalidRequest(f"{name}.class", "the manifest needs a 'class' column (classifiers) or an 'identity' "
                                              "column (embedding models)")
    present = [c for c in LANDMARK_COLUMNS if c in header]
    if present and len(present) != len(LANDMARK_COLUMNS):
        missing = next(c for c in LANDMARK_COLUMNS if c not in header)
        raise InvalidRequest(f"{name}.{missing}", "landmarks need all ten columns x1,y1,...,x5,y5; this one is missing")
    if "inpainted_probe" in header or "inpainted_non_mate" in header:
        for column in QUADRUPLET_COLUMNS:
            if column not in header:
                raise InvalidRequest(f"{name}.{column}", "inpainting quadruplets need the columns "
                                                         f"{', '.join(QUADRUPLET_COLUMNS)} besides 'image'")
    if group_column is not None and group_column not in header:
        raise InvalidRequest("group_column", f"{group_column!r} is not a column of {name}; columns: {', '.join(header)}")
    if group_column in KNOWN_COLUMNS:
        raise InvalidRequest("group_column", f"{group_column!r} is a reserved column, not a group attribute")
    return header


def _entry(root: Path, manifest: str, row: int, cells: dict[str, str], columns: list[str],
           group_column: str | None) -> Entry:
    def field(column: str) -> str:
        return f"{manifest}[row {row}].{column}"

    def path(column: str, *, required: bool = False) -> Path | None:
        value = cells.get(column, "")
        if not value:
            if required:
                raise InvalidRequest(field(column), "is empty: give the image's path relative to the dataset folder")
            return None
        return _inside(root, value, field(column))

    values: dict[str, object] = {name: path(name, required=name == "image") for name in PATH_COLUMNS}
    if "class" in columns:
        values["class_index"] = _class_index(cells["class"], field("class"))
    if "identity" in columns:
        if not cells["identity"]:
            raise InvalidRequest(field("identity"), "is empty: every row needs its identity")
        values["identity"] = cells["identity"]
    if group_column is not None:
        if not cells[group_column]:
            raise InvalidRequest(field(group_column), "is empty: every row needs a value of the group attribute")
        values["group"] = cells[group_column]
    if "x1" in columns:
        values["landmarks"] = _landmarks(cells, field)
    if values["inpainted_probe"] is not None or values["inpainted_non_mate"] is not None:
        for column in QUADRUPLET_COLUMNS:
            if values[column] is None:
                raise InvalidRequest(field(column), "is empty: a quadruplet row needs mate, region, inpainted_probe "
                                                    "and inpainted_non_mate")
        if values["non_mate"] not in (None, values["inpainted_non_mate"]):
            raise InvalidRequest(field("non_mate"), "must be empty or the inpainted_non_mate: a quadruplet's maps "
                                                    "are contrastive against its inpainted non-mate")
    name = values["image"].relative_to(root).as_posix()  # type: ignore[union-attr]
    return Entry(row=row, name=name, **values)  # type: ignore[arg-type]


def _class_index(raw: str, field: str) -> int:
    try:
        value = float(raw)
        if value != int(value) or value < 0:
            raise ValueError(raw)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(field, f"{raw!r} is not a class index (an integer ≥ 0)") from exc
    return int(value)


def _landmarks(cells: dict[str, str], field: Callable[[str], str]) -> np.ndarray:
    numbers = []
    for column in LANDMARK_COLUMNS:
        try:
            value = float(cells[column])
        except ValueError as exc:
            raise InvalidRequest(field(column), f"{cells[column]!r} is not a number (landmarks in pixels)") from exc
        if not np.isfinite(value):
            raise InvalidRequest(field(column), f"{cells[column]!r} must be finite")
        numbers.append(value)
    return np.array(numbers).reshape(5, 2)


def _inside(root: Path, value: str, field: str) -> Path:
    """`value` resolved under `root`: an existing file that does not escape it."""
    relative = Path(value)
    if relative.is_absolute() or value.startswith(("/", "\\")):
        raise InvalidRequest(field, f"{value!r} must be a path relative to the dataset folder")
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root):
        raise InvalidRequest(field, f"{value!r} leads outside the dataset folder")
    if not resolved.is_file():
        raise InvalidRequest(field, f"{value!r} is not a file in the dataset folder")
    return resolved
