"""Choose the analytic JPEG proxy's rate features on held-out training images (never Kodak).

Fits each candidate feature set by non-negative least squares (relative error) on the `prepcodec proxy fit-jpeg`
fit set (photos-train 1-40 + their 192 px crops) and scores it on images that are not in it (photos-train 41-69
and the first 60 imagenet-train crops), at 10 JPEG qualities: Pearson r of log bits, the worst per-quality bias of
the mean bits (|log ratio|) and the mean |log error|. docs/proxy.md has the table this prints.

    python scripts/jpeg_rate_feature_selection.py      # ~1 min on 2 cores
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import nnls

from prepcodec.data.datasets import get_dataset
from prepcodec.proxy.jpeg import _DCT, SOFT_NZ_SHARPNESS, _blocks, quant_tables, real_jpeg, ycbcr420

QUALITIES = (5, 8, 10, 16, 25, 35, 50, 64, 75, 90)
ZIGZAG = np.array([0, 1, 5, 6, 14, 15, 27, 28, 2, 4, 7, 13, 16, 26, 29, 42, 3, 8, 12, 17, 25, 30, 41, 43, 9, 11, 18,
                   24, 31, 40, 44, 53, 10, 19, 23, 32, 39, 45, 52, 54, 20, 22, 33, 38, 46, 51, 55, 60, 21, 34, 37, 47,
                   50, 56, 59, 61, 35, 36, 48, 49, 57, 58, 62, 63]).reshape(8, 8)
NAMES = ("all_log", "all_nz", "aclog", "acnz", "ac>1.5", "dc_raster", "dc_mcu", "nz_zigzag",
         "Y_aclog", "Y_acnz", "Y_ac>1.5", "C_aclog", "C_acnz", "C_ac>1.5", "const")
CANDIDATES = {
    "3-term model (all coefficients)": ("all_log", "all_nz", "const"),
    "AC log, AC nonzero, AC > 1.5, DC difference": ("aclog", "acnz", "ac>1.5", "dc_raster", "const"),
    "luma/chroma AC terms separate (shipped)": ("Y_aclog", "Y_acnz", "Y_ac>1.5", "C_aclog", "C_acnz", "C_ac>1.5",
                                                "dc_raster", "const"),
    "+ MCU-order DC, zig-zag-weighted nonzero": ("Y_aclog", "Y_acnz", "Y_ac>1.5", "C_aclog", "C_acnz", "C_ac>1.5",
                                                 "dc_mcu", "nz_zigzag", "const"),
}


def _soft(a: torch.Tensor, t: float) -> torch.Tensor:
    return torch.sigmoid(SOFT_NZ_SHARPNESS * (a - t))


@torch.no_grad()
def features(img: np.ndarray, quality: int) -> dict[str, float]:
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255
    y, cbcr = ycbcr420(x)
    qy, qc = quant_tables(quality)
    zz = torch.from_numpy(np.log2(1 + ZIGZAG)).float()
    f = dict.fromkeys(NAMES, 0.0)
    for i, (plane, q) in enumerate(((y, qy), (cbcr[:, 0], qc), (cbcr[:, 1], qc))):
        v = (_DCT @ _blocks(plane - 128) @ _DCT.T) / q
        dc = v[..., 0, 0]
        ac = v.abs().clone()
        ac[..., 0, 0] = 0
        hb, wb = dc.shape[1:]
        mcu = dc.reshape(1, hb // 2, 2, wb // 2, 2).permute(0, 1, 3, 2, 4).reshape(1, -1) if i == 0 else dc.flatten(1)
        terms = {"aclog": float(torch.log2(1 + ac).sum()), "acnz": float(_soft(ac, 0.5).sum()),
                 "ac>1.5": float(_soft(ac, 1.5).sum())}
        for k, val in terms.items():
            f[k] += val
            f[("Y_" if i == 0 else "C_") + k] += val
        f["all_log"] += float(torch.log2(1 + v.abs()).sum())
        f["all_nz"] += float(_soft(v.abs(), 0.5).sum())
        f["dc_raster"] += float(torch.log2(1 + dc.flatten(1).diff(dim=1).abs()).sum())
        f["dc_mcu"] += float(torch.log2(1 + mcu.diff(dim=1).abs()).sum())
        f["nz_zigzag"] += float((_soft(ac, 0.5) * zz).sum())
    f["const"] = 1.0
    return f


def table(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, bits, qs = [], [], []
    for img in images:
        for q in QUALITIES:
            f = features(img, q)
            rows.append([f[n] for n in NAMES])
            bits.append(8.0 * len(real_jpeg(img, q)))
            qs.append(q)
    return np.array(rows), np.array(bits), np.array(qs)


def main() -> None:
    torch.set_num_threads(1)
    photos, imagenet = get_dataset("photos-train"), get_dataset("imagenet-train")
    fit_imgs = [photos.load(it) for it in photos.items[:40]]
    fit_imgs += [im[:192, :192] for im in fit_imgs]
    val_imgs = [photos.load(it) for it in photos.items[40:]] + [imagenet.load(it) for it in imagenet.items[:60]]
    x_fit, y_fit, _ = table(fit_imgs)
    x_val, y_val, q_val = table(val_imgs)
    print("| features | val. Pearson r | worst quality bias | mean |log error| |")
    for label, names in CANDIDATES.items():
        cols = [NAMES.index(n) for n in names]
        coefs, _ = nnls(x_fit[:, cols] / y_fit[:, None], np.ones_like(y_fit))
        pred = x_val[:, cols] @ coefs
        r = np.corrcoef(np.log(pred), np.log(y_val))[0, 1]
        bias = max(abs(np.log(pred[q_val == q].mean() / y_val[q_val == q].mean())) for q in QUALITIES)
        print(f"| {label} | {r:.4f} | {bias:.3f} | {np.mean(np.abs(np.log(pred / y_val))):.3f} |")


if __name__ == "__main__":
    main()
