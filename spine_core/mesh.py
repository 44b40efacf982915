"""3-D surfaces of labelled vertebrae and fracture boxes, and their Plotly figure.

Every vertex is in LPS millimetres, placed through the mask's affine (so oblique or flipped
grids come out right); triangles are wound counter-clockwise seen from outside (outward normals).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from spine_core.colours import RGB
from spine_core.errors import InputError, MaskError
from spine_core.labels import CRANIOCAUDAL_ORDER, LEVEL_COLOURS, LEVEL_NAMES, level_id
from spine_core.volume import Volume

if TYPE_CHECKING:
    import plotly.graph_objects as go



@dataclass(frozen=True)
class VertebraMesh:
    """Triangle surface of one vertebra: vertices (N, 3) LPS mm, faces (M, 3) vertex indices."""

    level_id: int
    name: str
    colour: RGB
    vertices: npt.NDArray[np.float32]
    faces: npt.NDArray[np.int32]

    @property
    def colour_hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.colour)


@dataclass(frozen=True)
class BoxMesh:
    """A box (8 corners in LPS mm, 12 outward triangles) drawn translucent in the 3-D view."""

    name: str
    colour: RGB
    vertices: npt.NDArray[np.float64]
    faces: npt.NDArray[np.int32]
    opacity: float = 0.35


# --------------------------------------------------------------------------------------------
# Vertebra surfaces
# --------------------------------------------------------------------------------------------


def _level_ids(levels: Iterable[int | str] | None, present: Sequence[int]) -> list[int]:
    if levels is None:
        wanted = list(present)
    else:
        wanted = [level_id(lv) if isinstance(lv, str) else int(lv) for lv in levels]
        missing = [LEVEL_NAMES.get(lid, str(lid)) for lid in wanted if lid not in present]
        if missing:
            raise MaskError(
                f"levels {missing} are not in the mask; choose among the labelled levels"
            )
    order = {lid: i for i, lid in enumerate(CRANIOCAUDAL_ORDER)}
    return sorted(set(wanted), key=lambda lid: order.get(lid, 100 + lid))


def _block_mean(
    occ: npt.NDArray[np.float32], factors: tuple[int, int, int]
) -> npt.NDArray[np.float32]:
    """Mean over non-overlapping blocks (the array is zero-padded up to whole blocks)."""
    if factors == (1, 1, 1):
        return occ
    pad = [(0, (-n) % f) for n, f in zip(occ.shape, factors)]
    occ = np.pad(occ, pad)
    s = occ.shape
    f0, f1, f2 = factors
    blocks = occ.reshape(s[0] // f0, f0, s[1] // f1, f1, s[2] // f2, f2)
    return blocks.mean(axis=(1, 3, 5), dtype=np.float32)


def _surface(
    region: npt.NDArray[np.bool_], factors: tuple[int, int, int], sigma_vox: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Marching cubes of the smoothed, block-averaged region; vertices in region index units."""
    from scipy import ndimage
    from skimage import measure

    occ = _block_mean(region.astype(np.float32), factors)
    pad = 1 + int(np.ceil(2 * float(sigma_vox.max())))
    occ = np.pad(occ, pad)
    if float(sigma_vox.max()) > 0:
        occ = ndimage.gaussian_filter(occ, sigma=sigma_vox, mode="constant", truncate=2.5)
    level = min(0.5, 0.5 * float(occ.max()))  # tiny levels still get a surface
    verts, faces, _, _ = measure.marching_cubes(occ, level=level, allow_degenerate=False)
    f = np.asarray(factors, dtype=np.float64)
    # downsampled index u covers source voxels u*f .. u*f+f-1 of the region: centre u*f+(f-1)/2
    return (verts - pad) * f + (f - 1) / 2, faces.astype(np.int64)


def _cluster_decimate(
    verts: npt.NDArray[np.float64], faces: npt.NDArray[np.int64], target_faces: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Vertex clustering on a grid sized so about ``target_faces`` triangles remain."""
    for _ in range(4):
        if len(faces) <= target_faces:
            break
        tri = verts[faces]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        area = 0.5 * np.linalg.norm(normals, axis=1).sum()
        cell = float(np.sqrt(2.0 * area / target_faces))
        keys = np.floor((verts - verts.min(axis=0)) / cell).astype(np.int64)
        _, cluster, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        cluster = cluster.ravel()
        new_verts = np.zeros((len(counts), 3))
        for c in range(3):
            new_verts[:, c] = np.bincount(cluster, weights=verts[:, c], minlength=len(counts))
        new_verts /= counts[:, None]
        new_faces = cluster[faces]
        keep = (
            (new_faces[:, 0] != new_faces[:, 1])
            & (new_faces[:, 1] != new_faces[:, 2])
            & (new_faces[:, 0] != new_faces[:, 2])
        )
        new_faces = new_faces[keep]
        _, first = np.unique(np.sort(new_faces, axis=1), axis=0, return_index=True)
        verts, faces = new_verts, new_faces[np.sort(first)]
    used = np.unique(faces)
    remap = np.full(len(verts), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return verts[used], remap[faces]


def _taubin(
    verts: npt.NDArray[np.float64], faces: npt.NDArray[np.int64], iterations: int
) -> npt.NDArray[np.float64]:
    """Taubin λ/μ smoothing (shrink-free Laplacian smoothing) of the vertex positions."""
    if iterations <= 0 or len(faces) == 0:
        return verts
    from scipy import sparse

    n = len(verts)
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    i = np.concatenate([a, b, c, b, c, a])
    j = np.concatenate([b, c, a, a, b, c])
    adj = sparse.csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    deg = np.asarray(adj.sum(axis=1)).ravel()
    deg[deg == 0] = 1
    v = verts.copy()
    for _ in range(iterations):
        for factor in (0.5, -0.53):
            v = v + factor * (adj @ v / deg[:, None] - v)
    return v


def vertebra_meshes(
    mask: Volume,
    levels: Iterable[int | str] | None = None,
    *,
    step_mm: float = 1.5,
    smooth_sigma_mm: float = 1.0,
    smooth_iterations: int = 3,
    target_faces: int | None = 3000,
) -> list[VertebraMesh]:
    """One surface per vertebra level of a canonical-id mask, craniocaudal order.

    Args:
        mask: canonical level ids (0 background) with its affine.
        levels: ids or names to build (default: every level present); a level that is not in
            the mask raises :class:`MaskError`.
        step_mm: the level's crop is block-averaged to voxels of about this size first.
        smooth_sigma_mm: Gaussian smoothing of the (averaged) occupancy before marching cubes.
        smooth_iterations: Taubin smoothing passes on the mesh afterwards.
        target_faces: about this many triangles per vertebra at most (vertex clustering);
            None keeps every triangle.
    """
    from scipy import ndimage

    if step_mm <= 0 or smooth_sigma_mm < 0:
        raise InputError("step_mm must be > 0 and smooth_sigma_mm >= 0 (millimetres)")
    arr = np.asarray(mask.array)
    if not np.issubdtype(arr.dtype, np.integer):
        raise MaskError(f"a level mask holds integer ids, got dtype {arr.dtype}; load it as labels")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise MaskError("mask values must be canonical level ids 0–28; map the vocabulary first")
    labels = arr if arr.dtype == np.uint8 else arr.astype(np.uint8)
    objects = ndimage.find_objects(labels)
    present = [i + 1 for i, sl in enumerate(objects) if sl is not None]
    unknown = [lid for lid in present if lid not in LEVEL_NAMES]
    if unknown:
        raise MaskError(
            f"mask values {unknown} are not canonical level ids (1–28); map the dataset's labels "
            "through its LabelVocabulary first"
        )
    spacing = mask.spacing
    factors = tuple(max(1, int(round(step_mm / s))) for s in spacing)
    sigma_vox = smooth_sigma_mm / (spacing * np.asarray(factors))
    linear = mask.affine[:3, :3]
    # skimage winds faces clockwise seen from outside in index space; a mirroring affine undoes it
    flip_winding = np.linalg.det(linear) > 0
    meshes: list[VertebraMesh] = []
    for lid in _level_ids(levels, present):
        sl = objects[lid - 1]
        region = labels[sl] == lid
        verts, faces = _surface(region, factors, sigma_vox)  # type: ignore[arg-type]
        if target_faces is not None and len(faces) > target_faces:
            verts, faces = _cluster_decimate(verts, faces, int(target_faces))
        verts = _taubin(verts, faces, smooth_iterations)
        # Taubin's inflating step may nudge extreme vertices past the voxels: keep them inside
        np.clip(verts, -0.5, np.asarray(region.shape) - 0.5, out=verts)
        origin = np.array([s.start for s in sl], dtype=np.float64)
        lps = (verts + origin) @ linear.T + mask.affine[:3, 3]
        if flip_winding:
            faces = faces[:, ::-1]
        meshes.append(
            VertebraMesh(
                lid,
                LEVEL_NAMES[lid],
                LEVEL_COLOURS[lid],
                lps.astype(np.float32),
                np.ascontiguousarray(faces, dtype=np.int32),
            )
        )
    return meshes


# --------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------

#: Unit cube corners (bit 0 -> a0, bit 1 -> a1, bit 2 -> a2) and its outward triangles.
_CUBE_CORNERS = np.array([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=float)
_CUBE_FACES = np.array(
    [
        [0, 4, 6], [0, 6, 2],  # a0 = 0
        [1, 3, 7], [1, 7, 5],  # a0 = 1
        [0, 1, 5], [0, 5, 4],  # a1 = 0
        [2, 6, 7], [2, 7, 3],  # a1 = 1
        [0, 2, 3], [0, 3, 1],  # a2 = 0
        [4, 5, 7], [4, 7, 6],  # a2 = 1
    ],
    dtype=np.int32,
)  # fmt: skip


def box_mesh(
    affine: npt.ArrayLike,
    slices: tuple[int, int],
    x: float,
    y: float,
    width: float,
    height: float,
    *,
    name: str = "fracture",
    colour: RGB = (255, 40, 40),
    opacity: float = 0.35,
) -> BoxMesh:
    """A fracture box as a 3-D box: stored slices ``slices[0]..slices[1]`` × a pixel rectangle.

    ``x, y, width, height`` are the database's box pixels on the stored slices (x along a2, y along
    a1, edge convention: the box covers pixel edges ``x .. x + width``). The box spans the slices'
    full thickness (index ``k0 - 0.5 .. k1 + 0.5`` along a0).
    """
    k0, k1 = sorted((int(slices[0]), int(slices[1])))
    if width <= 0 or height <= 0:
        raise InputError(f"box {x, y, width, height} has no area; width and height must be > 0")
    aff = np.asarray(affine, dtype=np.float64)
    lo = np.array([k0 - 0.5, y - 0.5, x - 0.5])
    size = np.array([k1 - k0 + 1.0, height, width])
    index = lo + _CUBE_CORNERS * size
    corners = index @ aff[:3, :3].T + aff[:3, 3]
    faces = _CUBE_FACES if np.linalg.det(aff[:3, :3]) > 0 else _CUBE_FACES[:, ::-1]
    return BoxMesh(name, colour, corners, np.ascontiguousarray(faces), opacity)


# --------------------------------------------------------------------------------------------
# Plotly
# --------------------------------------------------------------------------------------------


def _mesh3d(
    vertices: npt.NDArray[Any], faces: npt.NDArray[Any], name: str, colour: str, **extra: Any
) -> go.Mesh3d:
    import plotly.graph_objects as go

    return go.Mesh3d(
        x=vertices[:, 0],
        y=vertices[:, 1],
        z=vertices[:, 2],
        i=faces[:, 0],
        j=faces[:, 1],
        k=faces[:, 2],
        name=name,
        color=colour,
        showlegend=True,
        hovertemplate=f"{name}<extra></extra>",
        **extra,
    )


def plotly_figure(
    meshes: Sequence[VertebraMesh], boxes: Sequence[BoxMesh] = (), *, height: int = 600
) -> go.Figure:
    """One named, coloured Mesh3d per vertebra (hover shows the level), translucent boxes.

    Axes are LPS mm with true proportions; the camera looks at the patient's front (from
    anterior, head up), so the patient's right is on the viewer's left.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    for m in meshes:
        fig.add_trace(
            _mesh3d(
                m.vertices,
                m.faces,
                m.name,
                m.colour_hex,
                flatshading=False,
                lighting=dict(ambient=0.45, diffuse=0.8, specular=0.2, roughness=0.6),
            )
        )
    for b in boxes:
        fig.add_trace(
            _mesh3d(
                b.vertices, b.faces, b.name, "#{:02x}{:02x}{:02x}".format(*b.colour), opacity=b.opacity
            )
        )
    fig.update_layout(
        height=height,
        margin=dict(l=0, r=0, t=0, b=0),
        scene=dict(
            aspectmode="data",
            xaxis_title="x → patient Left (mm)",
            yaxis_title="y → Posterior (mm)",
            zaxis_title="z → Superior (mm)",
            camera=dict(eye=dict(x=0.0, y=-2.0, z=0.0), up=dict(x=0.0, y=0.0, z=1.0)),
        ),
        legend=dict(itemsizing="constant"),
    )
    return fig
