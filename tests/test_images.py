"""load_image / save_png / list_images on real photos, including every odd format the loader converts."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from prepcodec.data.images import list_images, load_image, save_png
from prepcodec.data.samples import sample_paths
from prepcodec.errors import InputError


def _save(tmp_path: Path, name: str, im: Image.Image, **kw) -> Path:
    p = tmp_path / name
    im.save(p, **kw)
    return p


def _png16(path: Path, a: np.ndarray) -> Path:
    """Write a 16-bit-per-channel PNG (Pillow cannot write 48-bit RGB itself)."""
    h, w, c = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    colour_type = {1: 0, 3: 2, 4: 6}[c]
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_bundled_samples_load_as_rgb(sample_image):
    shapes = {p.stem: load_image(p).shape for p in sample_paths()}
    assert shapes == {"astronaut": (512, 512, 3), "chelsea": (300, 451, 3), "coffee": (400, 600, 3),
                      "kodim04": (768, 512, 3), "kodim23": (512, 768, 3)}
    assert sample_image("chelsea").dtype == np.uint8


def test_missing_folder_and_non_image(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="not a file"):
        load_image(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    with pytest.raises(InputError, match="not a recognised image"):
        load_image(text)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_refused_even_if_pillow_allows_truncation(tmp_path, sample_image, fmt, monkeypatch):
    buf = io.BytesIO()
    Image.fromarray(sample_image("coffee")).save(buf, format=fmt)
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image(p)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_grayscale_8_and_16_bit(tmp_path, sample_image):
    gray = np.asarray(Image.fromarray(sample_image("astronaut")).convert("L"))
    notes: list[str] = []
    out = load_image(_save(tmp_path, "g.png", Image.fromarray(gray)), notes)
    assert out.shape == (512, 512, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))
    assert notes == ["converted grayscale to RGB"]

    notes = []
    out16 = load_image(_png16(tmp_path / "g16.png", gray[..., None].astype(np.uint16) * 257), notes)
    assert np.array_equal(out16[..., 0], gray) and np.array_equal(out16[..., 2], gray)
    assert any("8 bit" in n for n in notes) and "converted grayscale to RGB" in notes

    as_float = Image.fromarray(gray.astype(np.float32) / 255.0)  # mode F, values in [0, 1]
    assert np.array_equal(load_image(_save(tmp_path, "f.tif", as_float))[..., 1], gray)


def test_sixteen_bit_rgb_png_is_reduced_to_8_bit(tmp_path, sample_image):
    a = sample_image("chelsea")
    notes: list[str] = []
    out = load_image(_png16(tmp_path / "c48.png", a.astype(np.uint16) * 257), notes)
    assert np.array_equal(out, a)  # v * 257 is v on the 16-bit scale; its high byte is v again
    assert "reduced 16-bit channels to 8 bit" in notes


def test_alpha_is_composited_over_white(tmp_path, sample_image):
    rgb = sample_image("coffee")
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[:, : rgb.shape[1] // 2] = 255  # left half opaque, right half fully transparent
    notes: list[str] = []
    out = load_image(_save(tmp_path, "a.png", Image.fromarray(np.dstack([rgb, alpha]), "RGBA")), notes)
    half = rgb.shape[1] // 2
    assert np.array_equal(out[:, :half], rgb[:, :half])
    assert (out[:, half:] == 255).all()
    assert notes == ["composited alpha channel over white"]

    la = Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA")
    out = load_image(_save(tmp_path, "la.png", la), notes := [])
    assert np.array_equal(out[:, :half, 1], rgb[:, :half, 0]) and (out[:, half:] == 255).all()
    assert "converted grayscale to RGB" in notes


def test_palette_cmyk_and_multiframe(tmp_path, sample_image):
    im = Image.fromarray(sample_image("kodim23"))
    pal = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    notes: list[str] = []
    out = load_image(_save(tmp_path, "p.png", pal), notes)
    assert np.array_equal(out, np.asarray(pal.convert("RGB"))) and notes == ["converted palette image to RGB"]

    cmyk = im.convert("CMYK")
    out = load_image(_save(tmp_path, "c.tif", cmyk), notes := [])
    assert np.array_equal(out, np.asarray(cmyk.convert("RGB"))) and notes == ["converted CMYK to RGB"]

    frames = [pal, pal.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    gif = tmp_path / "two.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    out = load_image(gif, notes := [])
    assert out.shape == (512, 768, 3) and "used the first of 2 frames" in notes


def test_exif_orientation_is_applied(tmp_path, sample_image):
    im = Image.fromarray(sample_image("chelsea"))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = _save(tmp_path, "o.jpg", im, exif=exif, quality=95)
    stored = np.asarray(Image.open(p).convert("RGB"))
    notes: list[str] = []
    out = load_image(p, notes)
    assert out.shape == (451, 300, 3)
    assert np.array_equal(out, np.rot90(stored, k=-1))
    assert notes == ["applied EXIF orientation"]


def test_tiny_and_too_large(tmp_path):
    one = load_image(_save(tmp_path, "1.png", Image.new("RGB", (1, 1), (10, 20, 30))))
    assert one.shape == (1, 1, 3) and one[0, 0].tolist() == [10, 20, 30]
    wide = _save(tmp_path, "wide.png", Image.new("L", (20000, 1)))
    with pytest.raises(InputError, match="beyond the limit"):
        load_image(wide)


def test_save_png_roundtrip_is_exact_and_atomic(tmp_path, sample_image):
    a = sample_image("kodim04")
    p = save_png(tmp_path / "sub" / "k.png", a)
    assert np.array_equal(load_image(p), a)
    assert sorted(x.name for x in p.parent.iterdir()) == ["k.png"]  # no temp file left behind
    with pytest.raises(InputError):
        save_png(tmp_path / "bad.png", np.zeros((4, 4), np.uint8))
    assert not (tmp_path / "bad.png").exists()


def test_list_images(tmp_path, sample_image):
    for name in ("b.png", "a.jpg", ".hidden.png"):
        Image.fromarray(sample_image("chelsea")).save(tmp_path / name)
    (tmp_path / "readme.txt").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.png"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty.*no image files"):
        list_images(empty)
    with pytest.raises(InputError, match="no such folder"):
        list_images(tmp_path / "missing")
