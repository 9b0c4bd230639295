"""Face alignment for canonical saliency maps: where each input pixel sits on a canonical face.

An aligner turns one input image (and, for `LandmarkAligner`, its landmarks) into a
`Correspondence` with the canonical frame of a fixed shape:
- `PreAligned`: the crop frame is the canonical frame (identity, or a resize);
- `LandmarkAligner`: K landmarks per image onto a K-point template, piecewise affine over the
  template's Delaunay triangulation;
- `OnnxLandmarkAligner`: landmarks predicted by a user's ONNX model, then `LandmarkAligner`.
John et al. (2021, §3.1) fit a 3D morphable model instead (PRNet); any dense correspondence
serves Algorithm 1.
"""

from faceaudit.alignment.correspondence import Correspondence, PreAligned, Shape
from faceaudit.alignment.landmarks import LandmarkAligner
from faceaudit.alignment.onnx_landmarks import OnnxLandmarkAligner
from faceaudit.alignment.render import neutral_face
from faceaudit.alignment.templates import (
    ARCFACE_112,
    OPENFACE_MEAN_68,
    WITHOUT_INNER_LIPS_68,
    arcface_template,
    five_points,
    mean_face_68,
    mean_face_68_on,
)

__all__ = [
    "ARCFACE_112",
    "OPENFACE_MEAN_68",
    "WITHOUT_INNER_LIPS_68",
    "Correspondence",
    "LandmarkAligner",
    "OnnxLandmarkAligner",
    "PreAligned",
    "Shape",
    "arcface_template",
    "five_points",
    "mean_face_68",
    "mean_face_68_on",
    "neutral_face",
]
