"""Canonical landmark templates: the five-point ArcFace layout and a 68-point mean face.

Points are (x, y) pixels in the pixel-centre convention of `faceaudit.alignment.correspondence`.
"""

from __future__ import annotations

import numpy as np

from faceaudit.alignment.correspondence import Shape, check_shape
from faceaudit.errors import InvalidRequest

# The five-point template of the 112×112 ArcFace/InsightFace crop: left eye, right eye, nose tip,
# left mouth corner, right mouth corner ("left" = image left), (x, y) pixels.
# Source: deepinsight/insightface, python-package/insightface/utils/face_align.py, `arcface_dst`
# (named `arcface_src` in older revisions, e.g. commit 0b2958eaed1416c19a2bd3d57c1f0a1d5273eb3a).
ARCFACE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
])

# The mean of dlib's 68 landmarks (iBUG 300-W markup: 0-16 jaw, 17-26 brows, 27-35 nose, 36-47
# eyes, 48-67 lips), in units of the face box (y reaches 1.06 at the chin).
# Source: cmusatyalab/openface, openface/align_dlib.py, `TEMPLATE`
# (commit 04f8cc34bbdaa818d60a23208468a301c0f84a46); OpenFace min-max normalises it as `MINMAX_TEMPLATE`.
OPENFACE_MEAN_68 = np.array([
    (0.0792396913815, 0.339223741112), (0.0829219487236, 0.456955367943),
    (0.0967927109165, 0.575648016728), (0.122141515615, 0.691921601066),
    (0.168687863544, 0.800341263616), (0.239789390707, 0.895732504778),
    (0.325662452515, 0.977068762493), (0.422318282013, 1.04329000149),
    (0.531777802068, 1.06080371126), (0.641296298053, 1.03981924107),
    (0.738105872266, 0.972268833998), (0.824444363295, 0.889624082279),
    (0.894792677532, 0.792494155836), (0.939395486253, 0.681546643421),
    (0.96111933829, 0.562238253072), (0.970579841181, 0.441758925744),
    (0.971193274221, 0.322118743967), (0.163846223133, 0.249151738053),
    (0.21780354657, 0.204255863861), (0.291299351124, 0.192367318323),
    (0.367460241458, 0.203582210627), (0.4392945113, 0.233135599851),
    (0.586445962425, 0.228141644834), (0.660152671635, 0.195923841854),
    (0.737466449096, 0.182360984545), (0.813236546239, 0.192828009114),
    (0.8707571886, 0.235293377042), (0.51534533827, 0.31863546193),
    (0.516221448289, 0.396200446263), (0.517118861835, 0.473797687758),
    (0.51816430343, 0.553157797772), (0.433701156035, 0.604054457668),
    (0.475501237769, 0.62076344024), (0.520712933176, 0.634268222208),
    (0.565874114041, 0.618796581487), (0.607054002672, 0.60157671656),
    (0.252418718401, 0.331052263829), (0.298663015648, 0.302646354002),
    (0.355749724218, 0.303020650651), (0.403718978315, 0.33867711083),
    (0.352507175597, 0.349987615384), (0.296791759886, 0.350478978225),
    (0.631326076346, 0.334136672344), (0.679073381078, 0.29645404267),
    (0.73597236153, 0.294721285802), (0.782865376271, 0.321305281656),
    (0.740312274764, 0.341849376713), (0.68499850091, 0.343734332172),
    (0.353167761422, 0.746189164237), (0.414587777921, 0.719053835073),
    (0.477677654595, 0.706835892494), (0.522732900812, 0.717092275768),
    (0.569832064287, 0.705414478982), (0.635195811927, 0.71565572516),
    (0.69951672331, 0.739419187253), (0.639447159575, 0.805236879972),
    (0.576410514055, 0.835436670169), (0.525398405766, 0.841706377792),
    (0.47641545769, 0.837505914975), (0.41379548902, 0.810045601727),
    (0.380084785646, 0.749979603086), (0.477955996282, 0.74513234612),
    (0.523389793327, 0.748924302636), (0.571057789237, 0.74332894691),
    (0.672409137852, 0.744177032192), (0.572539621444, 0.776609286626),
    (0.5240106503, 0.783370783245), (0.477561227414, 0.778476346951),
])

# 68-point indices without the inner lips (60-67), which closed mouths can collapse or cross.
WITHOUT_INNER_LIPS_68 = np.arange(60)


def arcface_template(size: int = 112) -> np.ndarray:
    """The five-point ArcFace template for a size×size crop, scaled as insightface's `estimate_norm`
    does: ARCFACE_112 · size/112 for multiples of 112; ARCFACE_112 · size/128 shifted right by
    8 · size/128 for multiples of 128 (the 112-wide layout centred in a 128-wide crop)."""
    check_shape((size, size), "size")
    if size % 112 == 0:
        return ARCFACE_112 * (size / 112.0)
    if size % 128 == 0:
        return ARCFACE_112 * (size / 128.0) + [8.0 * size / 128.0, 0.0]
    raise InvalidRequest("size", f"{size} is not a multiple of 112 or 128, the sizes the ArcFace layout is defined for")



def arcface_for_frame(shape: Shape) -> np.ndarray:
    """The five-point ArcFace layout for a height×width frame: insightface's for square crops of a
    multiple of 112 or 128 pixels (`arcface_template`), otherwise the 112 layout scaled to the frame
    (pixel centres kept). The CLI's --template arcface5 and the audit's canonical frame use it."""
    height, width = check_shape(shape, "shape")
    if height == width and (height % 112 == 0 or height % 128 == 0):
        return arcface_template(height)
    return (ARCFACE_112 + 0.5) * [width / 112.0, height / 112.0] - 0.5

def mean_face_68(shape: Shape = (112, 112), *, padding: float = 0.1) -> np.ndarray:
    """The 68-point mean face (68, 2) scaled uniformly and centred so that its bounding box fills
    the frame less `padding` (a fraction of each side) all round."""
    height, width = check_shape(shape, "shape")
    if not 0.0 <= padding < 0.5:
        raise InvalidRequest("padding", f"{padding!r} must be in [0, 0.5)")
    low, high = OPENFACE_MEAN_68.min(axis=0), OPENFACE_MEAN_68.max(axis=0)
    extent = np.array([width, height]) * (1.0 - 2.0 * padding)
    factor = float(np.min(extent / (high - low)))
    centre = np.array([width - 1.0, height - 1.0]) / 2.0
    return centre + factor * (OPENFACE_MEAN_68 - (low + high) / 2.0)


def five_points(points68: np.ndarray) -> np.ndarray:
    """The five ArcFace points (5, 2) of 68-point markup: eye centres (means of 36-41 and 42-47),
    nose tip (30) and mouth corners (48, 54)."""
    points68 = np.asarray(points68, dtype=np.float64)
    return np.stack([points68[36:42].mean(axis=0), points68[42:48].mean(axis=0), points68[30], points68[48], points68[54]])


def mean_face_68_on(five: np.ndarray) -> np.ndarray:
    """The 68-point mean face placed on a five-point frame (e.g. `arcface_template()`): the
    least-squares similarity (rotation, uniform scale, shift) taking its `five_points` onto `five`."""
    source = five_points(OPENFACE_MEAN_68)
    target = np.asarray(five, dtype=np.float64)
    if target.shape != (5, 2) or not np.isfinite(target).all():
        raise InvalidRequest("template", f"expected five finite (x, y) points, got shape {target.shape}")
    # x' = a x - b y + t_x, y' = b x + a y + t_y, solved for (a, b, t_x, t_y) by least squares.
    x, y = source[:, 0], source[:, 1]
    ones, zeros = np.ones(5), np.zeros(5)
    design = np.concatenate([np.column_stack([x, -y, ones, zeros]), np.column_stack([y, x, zeros, ones])])
    a, b, tx, ty = np.linalg.lstsq(design, np.concatenate([target[:, 0], target[:, 1]]), rcond=None)[0]
    return OPENFACE_MEAN_68 @ np.array([[a, b], [-b, a]]) + np.array([tx, ty])
