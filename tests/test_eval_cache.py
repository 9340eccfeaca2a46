"""The SQLite result cache: exact round trip, key sensitivity, all-or-nothing commits, sharing one file."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prepcodec.eval.cache import CacheKey, ResultCache, image_hash

SAMPLES = Path(__file__).resolve().parents[1] / "src/prepcodec/data/samples"


def _key(img: str, level: str = "30", pre: str = "none") -> CacheKey:
    return CacheKey(img, "jpeg", "Pillow 13", level, "eval", pre, "effnet-lite0")


def test_image_hash_sees_every_pixel_and_the_shape():
    rgb = np.asarray(Image.open(SAMPLES / "chelsea.png").convert("RGB")).copy()
    h = image_hash(rgb)
    assert h == image_hash(rgb.copy())
    flipped = rgb.copy()
    flipped[150, 200, 1] ^= 1
    assert image_hash(flipped) != h
    assert image_hash(rgb.reshape(300, 451 * 3, 1)) != h


def test_cache_round_trips_values_exactly_and_separates_keys(tmp_path):
    value = {"nbytes": 1234, "psnr": 31.123456789012345, "pred": {"top1": 281, "score": 0.1 + 0.2}}
    with ResultCache(tmp_path / "c.sqlite") as cache:
        cache.put_many([(_key("a"), value)])
        assert cache.get(_key("a")) == value
        for other in (_key("b"), _key("a", level="31"), _key("a", pre="blur:1")):
            assert cache.get(other) is None
    with ResultCache(tmp_path / "c.sqlite") as again:  # persisted
        got = again.get_many([_key("a"), _key("b")])
        assert got == {_key("a"): value} and len(again) == 1


def test_failed_commit_writes_nothing(tmp_path):
    with ResultCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(TypeError):
            cache.put_many([(_key("a"), {"ok": 1}), (_key("b"), {"bad": object()})])
        assert len(cache) == 0


def test_two_connections_share_the_file(tmp_path):
    a, b = ResultCache(tmp_path / "c.sqlite"), ResultCache(tmp_path / "c.sqlite")
    try:
        a.put_many([(_key("x"), [1, 2])])
        assert b.get(_key("x")) == [1, 2]
    finally:
        a.close()
        b.close()


def _numbered_key(i: int) -> CacheKey:
    return CacheKey(f"img{i}", "hevc", "x265", "37", "eval", "none", "effnet-lite0")


def test_a_damaged_cache_file_gets_one_line_naming_it(tmp_path):
    from prepcodec.errors import InputError

    noise = tmp_path / "noise.sqlite"
    noise.write_bytes(bytes(range(256)) * 64)
    folder = tmp_path / "folder.sqlite"
    folder.mkdir()
    good = tmp_path / "good.sqlite"
    with ResultCache(good) as cache:
        cache.put_many((_numbered_key(i), {"nbytes": i, "pad": "x" * 2000}) for i in range(400))
    truncated = tmp_path / "truncated.sqlite"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    for path in (noise, folder, truncated):
        with pytest.raises(InputError) as err:
            with ResultCache(path) as cache:
                cache.get_many(_numbered_key(i) for i in range(400))
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_proxy_eval_cache_recomputes_damaged_entries_and_keys_the_backend(tmp_path):
    from prepcodec.proxy.fidelity import RealCodecCache

    rgb = np.asarray(Image.open(SAMPLES / "chelsea.png").convert("RGB"))[:64, :64].copy()
    cache = RealCodecCache("jpeg", "eval", root=tmp_path)
    first = cache.run([rgb], [50], keep_decoded=True)[0]
    (entry,) = list(cache.root.glob("*.npz"))
    other_build = RealCodecCache("jpeg", "eval", root=tmp_path)
    other_build.backend = "Pillow 0.0 (another build)"
    assert cache.backend and other_build._key(rgb, 50) != cache._key(rgb, 50)
    entry.write_bytes(b"PK\x03\x04 not a zip")
    again = cache.run([rgb], [50], keep_decoded=True)[0]
    assert again["bits"] == first["bits"] and np.array_equal(again["decoded"], first["decoded"])
    assert np.load(entry)["bits"] == first["bits"]  # rewritten whole


def test_a_full_disk_under_the_cache_is_one_line_and_keeps_earlier_results(tiny_disk: Path):
    """On a 300 KB tmpfs: batches are committed until the disk fills; the failing batch is an OutputError that
    says so (not "not usable"), and everything committed before it reads back."""
    from prepcodec.errors import OutputError

    cache = ResultCache(tiny_disk / "cache.sqlite")
    value = {"pred": list(range(2000))}  # ~9 KB of JSON per row
    committed = 0
    with pytest.raises(OutputError, match="the disk is full"):
        for batch in range(100):
            cache.put_many((_numbered_key(batch * 4 + j), value) for j in range(4))
            committed = batch + 1
    assert committed > 0
    assert len(cache.get_many(_numbered_key(i) for i in range(committed * 4))) == committed * 4
    cache.close()
