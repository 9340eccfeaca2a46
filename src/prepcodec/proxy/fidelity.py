"""How faithfully a proxy imitates its real codec, on Kodak-24 (the proxy's test set; never trained on) or on
held-out training images (to choose between proxies without touching the test set).

- RD: BD-rate of the proxy's (bpp, PSNR vs original) curve against the real codec's, mean bpp per QP and ratio,
  PSNR between the proxy's and the codec's decoded images, Pearson r of log bits over images x QPs.
- Gradient alignment: for structured directions d (blur, sharpen, chroma shift, low-pass noise) the correlation
  across images between the proxy's directional derivative <grad f, d> and the real codec's central finite
  difference (f(x+eps d) - f(x-eps d)) / 2 eps, for f = bits and f = distortion MSE(decoded, x), per QP and eps,
  with a bootstrap 95 % interval over images. Done on downscaled images (documented) to keep it affordable.

Real-codec results are cached on disk (keyed by image bytes, codec, level, preset): the eval preset is slow.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from prepcodec.atomic import atomic_path
from prepcodec.proxy.targets import cache_dir, to_tensor

EVAL_QPS = (28, 31, 34, 37, 41)
GRAD_QPS = (28, 34, 41)
GRAD_EPS = (2.0, 4.0, 8.0)  # RMS of eps*d in 8-bit levels
DIRECTIONS = ("blur", "sharpen", "chroma_shift", "lowpass_noise")
ProxyFn = Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]


def codec_level(codec: str, qp: float) -> float:
    """The real codec's native level for a point on the HEVC-QP axis."""
    from prepcodec.codecs import get_codec

    if codec == "hevc":
        return float(qp)
    c = get_codec(codec)
    level = c.from_hevc_qp(float(qp))
    return float(round(level)) if c.level_spec.integer else float(level)


class RealCodecCache:
    """Real round-trip results (bits, decoded MSE vs a reference, optionally the decoded image) cached on disk."""

    def __init__(self, codec: str, preset: str = "eval", root: Path | None = None):
        from prepcodec.codecs import get_codec

        self.codec, self.preset = codec, preset
        self.backend = get_codec(codec).availability()[1]  # a new encoder build must not reuse old results
        self.root = (root or cache_dir().parent / "proxy-eval") / f"{codec}-{preset}"
        self.root.mkdir(parents=True, exist_ok=True)

    def _key(self, img: np.ndarray, level: float) -> str:
        h = hashlib.sha1(np.ascontiguousarray(img).tobytes())
        h.update(f"{img.shape}|{self.codec}|{self.backend}|{level}|{self.preset}".encode())
        return h.hexdigest()

    @staticmethod
    def _read(path: Path, keep_decoded: bool) -> dict | None:
        """A cached entry, or None when absent, incomplete or damaged (then it is recomputed and rewritten)."""
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                rec = {"bits": float(z["bits"]), "mse": float(z["mse"])}
                if keep_decoded:
                    if "decoded" not in z.files:
                        return None
                    rec["decoded"] = z["decoded"]
                return rec
        except Exception:  # BadZipFile, truncated members, missing keys: a cache entry is never trusted blindly
            return None

    def run(
        self, images: Sequence[np.ndarray], levels: Sequence[float], refs: Sequence[np.ndarray] | None = None,
        keep_decoded: bool = False, desc: str = "real codec",
    ) -> list[dict]:
        """[{bits, mse (vs refs[i] or the input), decoded?}] for each (image, level), computing only cache misses."""
        from prepcodec.codecs import default_pool

        refs = refs if refs is not None else images
        keys = [self._key(img, lv) for img, lv in zip(images, levels, strict=True)]
        out: list[dict | None] = [self._read(self.root / f"{k}.npz", keep_decoded) for k in keys]
        miss = [i for i, r in enumerate(out) if r is None]
        chunk = 16
        for s in tqdm(range(0, len(miss), chunk), desc=desc, unit="batch", disable=not miss):
            ids = miss[s : s + chunk]
            rts = default_pool().roundtrip(self.codec, [images[i] for i in ids], [levels[i] for i in ids], self.preset)
            for i, rt in zip(ids, rts, strict=True):
                mse = float(np.mean((rt.decoded.astype(np.float64) - refs[i].astype(np.float64)) ** 2))
                rec = {"bits": float(rt.bits), "mse": mse}
                arrays = {"bits": np.float64(rt.bits), "mse": np.float64(mse)}
                if keep_decoded:
                    rec["decoded"] = arrays["decoded"] = rt.decoded
                with atomic_path(self.root / f"{keys[i]}.npz") as tmp:
                    np.savez_compressed(tmp, **arrays)
                out[i] = rec
        return out  # type: ignore[return-value]


def _psnr(mse: float) -> float:
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def _gauss_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(3 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=x.dtype) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.device)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def direction(name: str, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A structured perturbation direction for (1,3,H,W) x, scaled to RMS 1/255 (one 8-bit level)."""
    if name == "blur":
        d = _gauss_blur(x, 1.5) - x
    elif name == "sharpen":
        d = x - _gauss_blur(x, 0.7)
    elif name == "chroma_shift":  # move the chroma (Cb, Cr) 2 px right/down, luma untouched
        m = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
        ycc = torch.einsum("ij,njhw->nihw", m, x)
        shifted = torch.roll(ycc, shifts=(2, 2), dims=(2, 3))
        dy = shifted - ycc
        dy[:, 0] = 0
        d = torch.einsum("ij,njhw->nihw", torch.linalg.inv(m), dy)
    elif name == "lowpass_noise":
        g = torch.Generator().manual_seed(seed)
        d = _gauss_blur(torch.randn(x.shape, generator=g), 3.0)
    else:
        raise ValueError(name)
    return d / d.pow(2).mean().sqrt().clamp_min(1e-12) / 255.0


def _corr_ci(a: np.ndarray, b: np.ndarray, reps: int = 1000, seed: int = 0) -> dict:
    """Pearson r across images with a bootstrap 95 % interval (resampling images)."""
    if np.std(a) == 0 or np.std(b) == 0:
        return {"r": None, "ci95": None}
    rng = np.random.default_rng(seed)
    rs = []
    for _ in range(reps):
        i = rng.integers(0, len(a), len(a))
        if np.std(a[i]) > 0 and np.std(b[i]) > 0:
            rs.append(np.corrcoef(a[i], b[i])[0, 1])
    lo, hi = np.percentile(rs, [2.5, 97.5])
    return {"r": round(float(np.corrcoef(a, b)[0, 1]), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}


def rd_fidelity(
    proxy: ProxyFn, codec: str, images: Sequence[np.ndarray], qps: Sequence[float] = EVAL_QPS, preset: str = "eval"
) -> dict:
    """BD-rate, Pearson r of log bits, per-QP bpp / PSNR numbers, and the raw (real, proxy) bits per image."""
    from prepcodec.eval.bdrate import CurveError, bd_rate

    cache = RealCodecCache(codec, preset)
    pairs = [(img, codec_level(codec, qp)) for qp in qps for img in images]
    real = cache.run([p[0] for p in pairs], [p[1] for p in pairs], keep_decoded=True, desc=f"{codec} RD points")
    per_qp, rb_all, pb_all = [], [], []
    k = 0
    for qp in qps:
        rows = []
        for img in images:
            r = real[k]
            k += 1
            x = to_tensor(img[None])
            with torch.no_grad():
                xh, b = proxy(x, float(qp))
            xh8 = (xh.clamp(0, 1) * 255).round()[0].permute(1, 2, 0).double().numpy()
            npx = img.shape[0] * img.shape[1]
            rows.append({
                "real_bits": r["bits"], "proxy_bits": float(b[0]), "npx": npx,
                "real_mse": r["mse"], "proxy_mse": float(np.mean((xh8 - img.astype(np.float64)) ** 2)),
                "proxy_vs_real_mse": float(np.mean((xh8 - r["decoded"].astype(np.float64)) ** 2)),
            })
        rb = np.array([r["real_bits"] for r in rows])
        pb = np.array([r["proxy_bits"] for r in rows])
        npx = np.array([r["npx"] for r in rows])
        rb_all.append(rb)
        pb_all.append(pb)
        per_qp.append({
            "qp": float(qp), "level": codec_level(codec, qp),
            "real_bpp": float(np.mean(rb / npx)), "proxy_bpp": float(np.mean(pb / npx)),
            "bpp_ratio": float(np.mean(pb / npx) / np.mean(rb / npx)),
            "real_psnr": float(np.mean([_psnr(r["real_mse"]) for r in rows])),
            "proxy_psnr": float(np.mean([_psnr(r["proxy_mse"]) for r in rows])),
            "psnr_proxy_vs_real": float(np.mean([_psnr(r["proxy_vs_real_mse"]) for r in rows])),
            "pearson_r_log_bits": float(np.corrcoef(np.log(rb), np.log(pb))[0, 1]),
        })
    rate_a = [p["real_bpp"] for p in per_qp]
    q_a = [p["real_psnr"] for p in per_qp]
    rate_b = [p["proxy_bpp"] for p in per_qp]
    q_b = [p["proxy_psnr"] for p in per_qp]
    rb, pb = np.concatenate(rb_all), np.concatenate(pb_all)
    try:
        bd, bd_note = float(bd_rate(rate_a, q_a, rate_b, q_b)), None
    except CurveError as exc:  # e.g. no PSNR overlap: the proxy is far from the codec; report why, not a number
        bd, bd_note = None, str(exc)
    return {
        "bd_rate_pct": bd,
        "bd_rate_note": bd_note,
        "pearson_r": float(np.corrcoef(np.log(rb), np.log(pb))[0, 1]),
        "per_qp": per_qp,
        "bits": {
            "qps": [float(q) for q in qps], "real": [a.tolist() for a in rb_all], "proxy": [a.tolist() for a in pb_all]
        },
    }


def _to_u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


def gradient_alignment(
    proxy: ProxyFn, codec: str, images: Sequence[np.ndarray], qps: Sequence[float] = GRAD_QPS,
    eps: Sequence[float] = GRAD_EPS, directions: Sequence[str] = DIRECTIONS, preset: str = "eval",
) -> dict:
    """Per direction, QP and eps: corr across images of proxy <grad f, d> vs the real codec's central difference."""
    cache = RealCodecCache(codec, preset)
    out: dict = {}
    for dname in directions:
        out[dname] = {}
        for qp in qps:
            level = codec_level(codec, qp)
            g_bits, g_dist, batch, refs = [], [], [], []
            for i, img in enumerate(images):
                x = to_tensor(img[None]).requires_grad_(True)
                d = direction(dname, x.detach(), seed=i)
                xh, b = proxy(x, float(qp))
                dist = F.mse_loss(xh, x.detach()) * 255.0**2
                gb, = torch.autograd.grad(b.sum(), x, retain_graph=True)
                gd, = torch.autograd.grad(dist, x)
                g_bits.append(float((gb * d).sum()))
                g_dist.append(float((gd * d).sum()))
                for e in eps:
                    for sgn in (1, -1):
                        batch.append(_to_u8(x.detach() + sgn * e * d))
                        refs.append(img)
            res = cache.run(batch, [level] * len(batch), refs=refs, desc=f"{dname} qp{qp:g}")
            entry = {}
            n_eps = len(eps)
            for j, e in enumerate(eps):
                fd_b, fd_d = [], []
                for i in range(len(images)):
                    plus, minus = res[(i * n_eps + j) * 2], res[(i * n_eps + j) * 2 + 1]
                    step = 2 * e / 255.0  # eps*d is e levels RMS; d itself has RMS 1/255
                    fd_b.append((plus["bits"] - minus["bits"]) / step)
                    fd_d.append((plus["mse"] - minus["mse"]) / step)
                entry[f"eps{e:g}"] = {
                    "bits": _corr_ci(np.array(g_bits) / 255.0, np.array(fd_b)),
                    "distortion": _corr_ci(np.array(g_dist) / 255.0, np.array(fd_d)),
                }
            out[dname][f"qp{qp:g}"] = entry
    return out


def scatter_plot(bits: dict, path: str | os.PathLike, title: str) -> Path:
    """Log-log scatter of real vs proxy bits per image, one colour per QP, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(5, 5))
    lo, hi = np.inf, 0.0
    for qp, r, p in zip(bits["qps"], bits["real"], bits["proxy"], strict=True):
        ax.scatter(r, p, s=12, label=f"QP {qp:g}")
        lo, hi = min(lo, min(r), min(p)), max(hi, max(r), max(p))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="real codec bits", ylabel="proxy bits", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path


def evaluate(
    proxy: ProxyFn, codec: str, images: Sequence[np.ndarray], grad_images: Sequence[np.ndarray] | None = None,
    plot: str | os.PathLike | None = None, name: str = "", data: str = "kodak",
) -> dict:
    """The full fidelity report as a JSON-able dict (top level: bd_rate_pct, pearson_r)."""
    t0 = time.perf_counter()
    rd = rd_fidelity(proxy, codec, images)
    t1 = time.perf_counter()
    ga = gradient_alignment(proxy, codec, grad_images) if grad_images else None
    t2 = time.perf_counter()
    report = {
        "proxy": name, "codec": codec, "data": data, "images": len(images), **rd, "gradient_alignment": ga,
        "grad_images": len(grad_images) if grad_images else 0,
        "grad_image_shape": list(grad_images[0].shape) if grad_images else None,
        "runtime_s": {"rd": round(t1 - t0, 1), "gradient_alignment": round(t2 - t1, 1)},
    }
    if plot:
        scatter_plot(rd["bits"], plot, f"{name or 'proxy'} vs {codec} ({data})")
        report["plot"] = str(plot)
    return report


def dumps(report: dict) -> str:
    return json.dumps(report, indent=2)
