"""The model-ready inputs of an audit: each manifest row's face, target, region and correspondence.

Reads the dataset's image files (one row at a time, so a large dataset streams); touches nothing else.

Targets: a classifier's map explains the row's `class`. An embedding model's maps explain the
probe against its mate and, where the row has one, its non-mate (the contrastive map); its CMS
averages the non-contrastive CIS maps against the mate only, so that every CMS has one sign
convention. Landmarks (in the file's pixels) are mapped to the model-sized image as pixel centres,
x_model + 0.5 = (x_file + 0.5)·scale, then onto the five-point ArcFace template laid out in a
canonical frame of the model's size (margin 0.5, as `faceaudit cms`); rows without landmarks use
the crop itself as the canonical frame (`PreAligned`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from faceaudit.alignment import Correspondence, LandmarkAligner, PreAligned
from faceaudit.alignment.templates import arcface_for_frame
from faceaudit.alignment import mean_face_68_on, neutral_face
from faceaudit.audit.dataset import Dataset, Entry
from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.images.io import fit_to_model, read_image
from faceaudit.methods.common import ExplainTarget

LANDMARK_MARGIN = 0.5


@dataclass(frozen=True, eq=False)
class Face:
    entry: Entry
    image: np.ndarray  # model-sized float32 RGB in [0, 255]
    target: ExplainTarget  # what the maps explain and the games score
    cms_target: ExplainTarget  # what the CIS maps of the CMS explain
    correspondence: Correspondence
    landmarks: np.ndarray | None  # (5, 2) on the model-sized image
    region: np.ndarray | None  # (H, W) bool on the model-sized image
    inpainted: tuple[np.ndarray, np.ndarray] | None = None  # quadruplet rows: inpainted probe and non-mate


class Inputs:
    """Turns a dataset's rows into `Face`s for one model (checked against its kind first)."""

    def __init__(self, model: PreparedModel, dataset: Dataset) -> None:
        self.model = model
        self.dataset = dataset
        self.shape = (model.spec.require("height"), model.spec.require("width"))
        self.kind = model.spec.require("kind")
        if self.kind == "classifier":
            dataset.check_classes(model.output_size)
            self._pairs: list[tuple[Path, Path | None]] = []
        else:
            self._pairs = dataset.pairs()
        self.template = arcface_for_frame(self.shape)
        self._aligner = LandmarkAligner(self.template, self.shape, margin=LANDMARK_MARGIN) if dataset.has_landmarks else None
        self._pre_aligned = PreAligned(self.shape)

    def faces(self) -> Iterator[Face]:
        for index, entry in enumerate(self.dataset.entries):
            yield self.face(index, entry)

    def face(self, index: int, entry: Entry) -> Face:
        field = self.dataset.field(entry, "image")
        original = read_image(entry.image, field=field).astype(np.float32)
        image = fit_to_model(original, self.model.spec)
        if self.kind == "classifier":
            target = cms_target = ExplainTarget(class_index=entry.class_index)
        else:
            mate_path, non_mate_path = self._pairs[index]
            mate = self.load(mate_path, self.dataset.field(entry, "mate"))
            non_mate = None if non_mate_path is None else self.load(non_mate_path, self.dataset.field(entry, "non_mate"))
            target, cms_target = ExplainTarget(mate=mate, non_mate=non_mate), ExplainTarget(mate=mate)
        landmarks = None
        if entry.landmarks is not None:
            scale = np.array([image.shape[1] / original.shape[1], image.shape[0] / original.shape[0]])
            landmarks = (entry.landmarks + 0.5) * scale - 0.5
        region = None if entry.region is None else self.mask(entry.region, self.dataset.field(entry, "region"))
        inpainted = None
        if entry.inpainted_probe is not None and entry.inpainted_non_mate is not None:
            inpainted = (self.load(entry.inpainted_probe, self.dataset.field(entry, "inpainted_probe")),
                         self.load(entry.inpainted_non_mate, self.dataset.field(entry, "inpainted_non_mate")))
        try:
            correspondence = self.correspond(image, landmarks)
        except InvalidRequest as exc:  # name the row: the aligner only knows "landmarks"
            raise InvalidRequest(self.dataset.field(entry, "x1..y5"), str(exc).split(": ", 1)[-1]) from exc
        return Face(entry, image, target, cms_target, correspondence, landmarks, region, inpainted)

    def load(self, path: Path, field: str) -> np.ndarray:
        return fit_to_model(read_image(path, field=field).astype(np.float32), self.model.spec)

    def mask(self, path: Path, field: str) -> np.ndarray:
        """A mask file (non-zero = inside) as a model-sized bool array (nearest-neighbour resize)."""
        pixels = read_image(path, field=field).max(axis=2)
        picture = Image.fromarray(np.where(pixels > 127, 255, 0).astype(np.uint8))
        return np.asarray(picture.resize(self.shape[::-1], Image.NEAREST)) > 127

    def correspond(self, image: np.ndarray, landmarks: np.ndarray | None) -> Correspondence:
        if self._aligner is None or landmarks is None:
            return self._pre_aligned.correspond(image)
        return self._aligner.correspond(image, landmarks)

    def backdrop(self) -> np.ndarray:
        """The neutral face that canonical maps (CMS) are drawn over, laid out like the canonical frame."""
        if self._aligner is not None:
            return neutral_face(self.shape, mean_face_68_on(self.template))
        return neutral_face(self.shape)

