"""Pack the proxy's training images (photos-train + imagenet-train, never Kodak) for a run on the lent GPU machine.

That machine has no ../shared/data, so the images travel inside the repo: each training image after its data set's
resize rule, re-saved as JPEG (quality `--quality`) into `.gpu/imgs/` (ignored by git via .git/info/exclude).
`prepcodec proxy train --stream N --images .gpu/imgs ...` reads them there (file names `<data set>-<index>.jpg`
make one crop group per data set; the full command is in docs/proxy.md). The JPEG step changes the pixels
slightly; the real-codec targets are computed from the same decoded JPEGs, so inputs and targets stay consistent.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from prepcodec.data.datasets import get_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=".gpu/imgs")
    ap.add_argument("--quality", type=int, default=90)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name in ("photos-train", "imagenet-train"):
        ds = get_dataset(name)
        for i, item in enumerate(ds.items):
            p = out / f"{name}-{i:04d}.jpg"
            Image.fromarray(ds.load(item)).save(p, quality=args.quality)
            total += p.stat().st_size
    print(f"{len(list(out.glob('*.jpg')))} images, {total / 2**20:.1f} MiB in {out}")


if __name__ == "__main__":
    main()
