"""Where the network removes information, on held-out images: one figure people look at instead of a table.

A row per image: the original, the NPP's output x̄, the removed information |x − x̄| amplified, the plain decode
at the QP and the NPP's decode at about equal bits (its best level within the plain stream's bits), each with the
task's output drawn (a classifier's top-1, a detector's boxes); for a classifier network, Grad-CAM of the classifier
(the `grad-cam` package) on both decodes, for the class it finds on the original. Every decode is a real bitstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prepcodec.eval.showcase import ShowcasePhoto, removed_information

REMOVED_GAIN = 4.0  # |x − x̄| is amplified by this much to be visible


@dataclass
class PictureRow:
    """One image's coded variants (plain, NPP at the same level, NPP at equal bits) and, for a classifier, the
    Grad-CAM maps of the plain and the equal-bits NPP decodes."""

    photo: ShowcasePhoto
    cams: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def plain(self):
        return self.photo.variants[0]

    @property
    def npp_equal(self):
        return self.photo.variants[2]


def _label(variant, kind: str) -> str:
    if kind == "classification":
        top = variant.top5[0]
        return f"{top['name'][:18]} {top['score']:.2f}"
    return variant.boxes_label


def _overlay(rgb: np.ndarray, cam: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    heat = colormaps["jet"](cam)[..., :3] * 255
    return (0.5 * rgb + 0.5 * heat).astype(np.uint8)


def _cells(row: PictureRow, kind: str, qp: int) -> list[tuple[np.ndarray, str]]:
    from prepcodec.tasks.outputs import draw_prediction

    p, plain, same, equal = row.photo, row.plain, row.photo.variants[1], row.npp_equal

    def shown(v):
        return draw_prediction(v.decoded, "detection", v.boxes) if kind == "detection" else v.decoded

    cells = [
        (p.original, f"{p.name}: original"),
        (same.encoded_input, f"NPP output x̄ (QP {qp})"),
        (removed_information(p.original, same.encoded_input, REMOVED_GAIN), f"|x − x̄| × {REMOVED_GAIN:g}"),
        (shown(plain), f"plain QP {plain.level}: {plain.bpp:.3f} bpp\n{_label(plain, kind)}"),
        (shown(equal), f"NPP QP {equal.level}: {equal.bpp:.3f} bpp\n{_label(equal, kind)}"),
    ]
    if row.cams is not None:
        cells += [(_overlay(plain.decoded, row.cams[0]), "Grad-CAM, plain"),
                  (_overlay(equal.decoded, row.cams[1]), "Grad-CAM, NPP")]
    return cells


def picture_sheet(rows: list[PictureRow], kind: str, qp: int, title: str, out: Path) -> Path:
    """Draw the rows as one PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prepcodec.atomic import atomic_path

    grid = [_cells(r, kind, qp) for r in rows]
    ncol = max(len(c) for c in grid)
    fig, axes = plt.subplots(len(grid), ncol, figsize=(2.3 * ncol, 2.5 * len(grid)), squeeze=False)
    for axes_row, cells in zip(axes, grid, strict=True):
        for ax, (img, text) in zip(axes_row, cells, strict=False):
            ax.imshow(img)
            ax.set_title(text, fontsize=7)
        for ax in axes_row:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out


def picture_row(codec, rgb: np.ndarray, name: str, qp: int, network: str, pre, preset: str, classifier,
                detector) -> PictureRow:
    """Code one image plain and through the network, fill in the task outputs and (classifier) Grad-CAM."""
    from prepcodec.eval.showcase import annotate, code_photo
    from prepcodec.tasks.explain import classifier_grad_cam

    photo = ShowcasePhoto(name, rgb, code_photo(codec, rgb, qp, {network: pre}, preset))
    annotate(photo, classifier, detector)
    row = PictureRow(photo)
    if detector is None:
        c = photo.original_top5[0]["index"]
        row.cams = (classifier_grad_cam(classifier, row.plain.decoded, c),
                    classifier_grad_cam(classifier, row.npp_equal.decoded, c))
    return row
