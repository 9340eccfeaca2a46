"""Named data sets with fixed, deterministic splits (documented in docs/evaluation.md, "Evaluation sets").

Every split is a pure function of the sorted file names, so the same folder always gives the same images, ids,
labels and pixels. Positions are 0-based indices into the name-sorted file list.

| name             | folder (under shared_data_dir())  | images                      | pixels the codec sees          |
|------------------|-----------------------------------|-----------------------------|--------------------------------|
| imagenet-eval    | imagenet-samples/                 | odd positions (500)         | shorter side 256, centre 256²  |
| imagenet-train   | imagenet-samples/                 | even positions (500)        | shorter side 256, centre 256²  |
| coco-val         | coco-val-subset/images/           | all 79                      | native resolution              |
| coco-eval        | coco-val-subset + coco-val-extra  | 79 + 202 (full 80-class GT) | native resolution              |
| coco-person      | coco-val-subset + coco-val-extra  | 39 + 178 with keypoints GT  | native resolution              |
| coco-person1     | coco-val-subset + coco-val-extra  | those with one person       | native resolution              |
| coco-train       | coco-train128/images/             | all 128 (training only)     | native resolution              |
| photos-eval      | photos/                           | positions 3, 7, 11, ... (23) | longer side 640                |
| photos-train     | photos/                           | the other positions (69)    | longer side 640                |
| kodak            | kodak/                            | all 24                      | native (768x512 / 512x768)     |
| samples          | bundled in the package            | all 5                       | native                         |
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from prepcodec.data.images import list_images, load_image
from prepcodec.errors import DataMissing, InputError

ENV_VAR = "PREPCODEC_SHARED_DATA"
IMAGENET_SIDE = 256
PHOTOS_LONG_SIDE = 640
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Item:
    """One image of a data set: a stable id (the file stem), its file and its label (class index or None)."""

    id: str
    path: Path
    label: int | None = None


@dataclass
class Dataset:
    """A named, ordered list of images plus the rule that turns a file into the pixels the codec encodes."""

    name: str
    items: list[Item]
    transform: Callable[[np.ndarray], np.ndarray] = field(default=lambda a: a, repr=False)
    description: str = ""
    instances_json: Path | None = None  # coco-val: COCO boxes/masks ground truth
    keypoints_json: Path | None = None  # coco-val: COCO person keypoints ground truth
    coco_ids: dict[str, int] = field(default_factory=dict, repr=False)  # coco-val: item id -> COCO image id

    def __len__(self) -> int:
        return len(self.items)

    def load(self, item: Item, notes: list[str] | None = None) -> np.ndarray:
        """The RGB uint8 HxWx3 pixels of `item` after this set's resize/crop rule."""
        return self.transform(load_image(item.path, notes))


def image_hash(rgb: np.ndarray) -> str:
    """Content hash of exact pixels (shape and dtype included), for result caches keyed by what the codec sees."""
    h = hashlib.sha256(f"{rgb.shape}|{rgb.dtype}".encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()


def _repo_root() -> Path | None:
    """The source checkout holding this file (the first parent with a pyproject.toml), if any."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return None


def shared_data_dir() -> Path:
    """`$PREPCODEC_SHARED_DATA`, else `../shared/data` from the current folder or from the repository root."""
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise DataMissing(f"{ENV_VAR}={env} is not a folder")
        return p.resolve()
    candidates = [Path.cwd() / ".." / "shared" / "data"]
    root = _repo_root()
    if root is not None:
        candidates.append(root / ".." / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    tried = ", ".join(str(c.resolve()) for c in candidates)
    raise DataMissing(f"shared data folder not found (tried {tried}); set {ENV_VAR} to its location")


def _shared_folder(sub: str, dataset: str) -> Path:
    folder = shared_data_dir() / sub
    if not folder.is_dir():
        raise DataMissing(f"data set {dataset!r} needs {folder}, which does not exist")
    return folder


def _sorted_images(folder: Path, dataset: str) -> list[Path]:
    try:
        return list_images(folder)
    except InputError as exc:
        raise DataMissing(f"data set {dataset!r}: {exc}") from exc


def resize_short_center_crop(rgb: np.ndarray, side: int = IMAGENET_SIDE) -> np.ndarray:
    """Shorter side -> `side` (bicubic, antialiased), then the centre `side` x `side` crop."""
    h, w = rgb.shape[:2]
    scale = side / min(h, w)
    nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
    im = Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - side) // 2, (nh - side) // 2
    return np.asarray(im.crop((left, top, left + side, top + side)), dtype=np.uint8).copy()


def resize_long_side(rgb: np.ndarray, side: int = PHOTOS_LONG_SIDE) -> np.ndarray:
    """Longer side -> `side` (bicubic, antialiased when shrinking), aspect ratio kept."""
    h, w = rgb.shape[:2]
    if max(h, w) == side:
        return rgb
    scale = side / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    return np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BICUBIC), dtype=np.uint8).copy()


def _imagenet(name: str) -> Dataset:
    files = _sorted_images(_shared_folder("imagenet-samples", name), name)
    wnids = sorted({p.stem.split("_", 1)[0] for p in files})
    if len(wnids) != IMAGENET_CLASSES:
        raise DataMissing(
            f"data set {name!r}: found {len(wnids)} ImageNet classes, need all {IMAGENET_CLASSES} "
            "(class index = rank of the wnid among the sorted wnids)"
        )
    rank = {w: i for i, w in enumerate(wnids)}
    parity = 1 if name == "imagenet-eval" else 0
    items = [Item(p.stem, p, rank[p.stem.split("_", 1)[0]]) for i, p in enumerate(files) if i % 2 == parity]
    return Dataset(name, items, resize_short_center_crop,
                   "ImageNet-1k, one photo per class; shorter side 256, centre crop 256x256")


def _photos(name: str) -> Dataset:
    files = _sorted_images(_shared_folder("photos", name), name)
    keep = (lambda i: i % 4 == 3) if name == "photos-eval" else (lambda i: i % 4 != 3)
    items = [Item(p.stem, p) for i, p in enumerate(files) if keep(i)]
    return Dataset(name, items, resize_long_side, "curated photographs; longer side 640")


def _coco(name: str) -> Dataset:
    root = _shared_folder("coco-val-subset", name)
    instances, keypoints = root / "instances.json", root / "person_keypoints.json"
    for f in (instances, keypoints):
        if not f.is_file():
            raise DataMissing(f"data set {name!r} needs {f}, which does not exist")
    files = _sorted_images(root / "images", name)
    ids = {im["file_name"]: int(im["id"]) for im in json.loads(instances.read_text())["images"]}
    items = [Item(p.stem, p) for p in files]
    coco_ids = {p.stem: ids.get(p.name, int(p.stem) if p.stem.isdigit() else -1) for p in files}
    return Dataset(name, items, description="COCO val2017 subset with ground truth; native resolution",
                   instances_json=instances, keypoints_json=keypoints, coco_ids=coco_ids)


def merged_coco_json(name: str, parts: list[tuple[Path, set[str] | None]], category: int | None = None) -> Path:
    """One COCO JSON from several (file, image names to keep or None for all): images by their original COCO id,
    annotations renumbered, categories of the first file; `category` keeps that category only. Written once into
    the prepcodec cache (keyed by the inputs' content), so a set's ground truth is one file pycocotools reads."""
    from prepcodec.atomic import write_text
    from prepcodec.tasks.weights import cache_dir

    h = hashlib.sha256(json.dumps([name, category]).encode())
    for path, keep in parts:
        h.update(path.read_bytes())
        h.update(json.dumps(sorted(keep) if keep is not None else None).encode())
    out = cache_dir() / "coco" / f"{name}-{h.hexdigest()[:12]}.json"
    if out.is_file():
        return out
    images, annotations, categories = {}, [], None
    for path, keep in parts:
        data = json.loads(path.read_text())
        categories = categories or data["categories"]
        ids = {im["id"] for im in data["images"] if keep is None or im["file_name"] in keep}
        images.update({im["id"]: im for im in data["images"] if im["id"] in ids})
        for a in data["annotations"]:
            if a["image_id"] in ids and (category is None or a["category_id"] == category):
                annotations.append({**a, "id": len(annotations) + 1})
    if category is not None:
        categories = [c for c in categories if c["id"] == category]
    merged = {"images": [images[k] for k in sorted(images)], "annotations": annotations, "categories": categories}
    write_text(out, json.dumps(merged) + "\n")
    return out


def _coco_files(root: Path, gt: Path, name: str, with_annotations: bool) -> list[Path]:
    """The images of `root/images` that `gt` lists (and, if asked, that have at least one annotation)."""
    data = json.loads(gt.read_text())
    annotated = {a["image_id"] for a in data["annotations"]}
    names = {im["file_name"] for im in data["images"] if not with_annotations or im["id"] in annotated}
    return [p for p in _sorted_images(root / "images", name) if p.name in names]


def _require(*files: Path, name: str) -> None:
    for f in files:
        if not f.is_file():
            raise DataMissing(f"data set {name!r} needs {f}, which does not exist")


def _coco_eval(name: str) -> Dataset:
    """coco-val's 79 images + the 202 of coco-val-extra with full 80-class ground truth (one merged JSON)."""
    sub, extra = _shared_folder("coco-val-subset", name), _shared_folder("coco-val-extra", name)
    gt_sub, gt_extra = sub / "instances.json", extra / "instances_80class.json"
    _require(gt_sub, gt_extra, name=name)
    files = _coco_files(sub, gt_sub, name, False) + _coco_files(extra, gt_extra, name, False)
    merged = merged_coco_json(name, [(gt_sub, None), (gt_extra, None)])
    return _coco_dataset(name, files, merged, None, "COCO val2017: 79 + 202 images, full 80-class ground truth")


def _coco_person(name: str) -> Dataset:
    """The val images with persons and keypoint ground truth (39 of coco-val + 178 of coco-val-extra), for pose;
    `coco-person1` keeps those with exactly one annotated person (no crowd region), the pictures a single-pose
    model such as MoveNet is made for (on the full set it finds one of up to a dozen people and its AP is flat)."""
    sub, extra = _shared_folder("coco-val-subset", name), _shared_folder("coco-val-extra", name)
    kp_sub, kp_extra = sub / "person_keypoints.json", extra / "person_keypoints.json"
    box_sub, box_extra = sub / "instances.json", extra / "person_instances.json"
    _require(kp_sub, kp_extra, box_sub, box_extra, name=name)
    files = _coco_files(sub, kp_sub, name, True) + _coco_files(extra, kp_extra, name, True)
    single_person = name == "coco-person1"
    if single_person:
        single = _single_person_files(box_sub) | _single_person_files(box_extra)
        files = [p for p in files if p.name in single]
    keep = {p.name for p in files}
    keypoints = merged_coco_json(name + "-keypoints", [(kp_sub, keep), (kp_extra, keep)])
    boxes = merged_coco_json(name + "-boxes", [(box_sub, keep), (box_extra, keep)], category=1)
    what = "COCO val2017 images with " + ("exactly one person" if single_person else "persons")
    return _coco_dataset(name, files, boxes, keypoints, what + ": boxes and keypoints")


def _single_person_files(instances: Path) -> set[str]:
    """File names of the images whose COCO instances hold exactly one person annotation, and it is not a crowd."""
    data = json.loads(instances.read_text())
    persons: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        if a["category_id"] == 1:
            persons.setdefault(a["image_id"], []).append(a)
    return {im["file_name"] for im in data["images"]
            if len(found := persons.get(im["id"], [])) == 1 and not found[0].get("iscrowd")}


def _coco_train(name: str) -> Dataset:
    """coco-train128: 128 COCO train2017 images, training only (the detectors saw train2017: never evaluate)."""
    root = _shared_folder("coco-train128", name)
    gt = root / "instances.json"
    _require(gt, name=name)
    files = _sorted_images(root / "images", name)
    return _coco_dataset(name, files, gt, None, "COCO train2017, first 128 images (training only)")


def _coco_dataset(name: str, files: list[Path], instances: Path, keypoints: Path | None, what: str) -> Dataset:
    ids = {im["file_name"]: int(im["id"]) for im in json.loads(instances.read_text())["images"]}
    coco_ids = {p.stem: ids.get(p.name, int(p.stem) if p.stem.isdigit() else -1) for p in files}
    return Dataset(name, [Item(p.stem, p) for p in files], description=what, instances_json=instances,
                   keypoints_json=keypoints, coco_ids=coco_ids)


def _kodak(name: str) -> Dataset:
    files = _sorted_images(_shared_folder("kodak", name), name)
    return Dataset(name, [Item(p.stem, p) for p in files], description="Kodak Lossless True Color Image Suite")


def _samples(name: str) -> Dataset:
    from prepcodec.data.samples import sample_paths

    return Dataset(name, [Item(p.stem, p) for p in sample_paths()], description="bundled sample photos")


_BUILDERS: dict[str, Callable[[str], Dataset]] = {
    "imagenet-eval": _imagenet,
    "imagenet-train": _imagenet,
    "coco-val": _coco,
    "coco-eval": _coco_eval,
    "coco-person": _coco_person,
    "coco-person1": _coco_person,
    "coco-train": _coco_train,
    "photos-eval": _photos,
    "photos-train": _photos,
    "kodak": _kodak,
    "samples": _samples,
}


def list_datasets() -> list[str]:
    """Names `get_dataset` accepts."""
    return list(_BUILDERS)


_SLICED = re.compile(r"^(?P<base>[a-z0-9-]+)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")


def _parse(spec: str) -> tuple[str, str, slice | None]:
    """'Photos-Train[:57]' -> ('photos-train[:57]', 'photos-train', slice(None, 57)); no slice -> None."""
    key = str(spec).strip().lower()
    m = _SLICED.match(key)
    if not m:
        return key, key, None
    start, stop = (int(v) if v else None for v in (m["start"], m["stop"]))
    return key, m["base"], slice(start, stop)


def base_name(spec: str) -> str:
    """'photos-train[:57]' -> 'photos-train' (a plain name is returned as it is, lower-cased)."""
    return _parse(spec)[1]


def get_dataset(name: str) -> Dataset:
    """The data set called `name`, or a slice of one ('photos-train[:57]', 'photos-train[57:]': Python slice
    semantics over its ordered items, so a training part and a validation part never overlap).

    InputError for an unknown name or a malformed slice, DataMissing when its folder is absent.
    """
    key, base, part = _parse(name)
    if base not in _BUILDERS:
        raise InputError(f"unknown data set {name!r}; choose one of {', '.join(_BUILDERS)} "
                         "(optionally sliced, e.g. photos-train[:57])")
    ds = _BUILDERS[base](base)
    return ds if part is None else dataclasses.replace(ds, name=key, items=ds.items[part])
