"""Annex-B helpers shared by the HEVC and VVC codecs.

4:2:0 streams can only crop by even amounts (the conformance window counts in chroma samples), so an odd-sized
image is coded one row/column larger and its true size rides in a tiny user-data-unregistered SEI NAL appended
after the picture. Stock decoders ignore it (and show the even-sized picture); ours crops back exactly. Even
sizes >= 16 px add no bytes. Every stream ends with an end-of-bitstream NAL so truncation is detectable.
"""

from __future__ import annotations

import struct

_START = b"\x00\x00\x00\x01"
# Random UUID that marks our size SEI ("prepcodec size v1").
SIZE_UUID = bytes.fromhex("9b1f5c1a7e0a4d3c8f2e6b7d5a4c3e21")
_USER_DATA_UNREGISTERED = 5

# Two-byte NAL headers of a suffix SEI (layer 0, temporal id 0).
SUFFIX_SEI_HEADER = {
    "hevc": bytes([40 << 1, 1]),  # forbidden(1) type(6) layer(6) tid+1(3): type 40 = SUFFIX_SEI_NUT
    "vvc": bytes([0, (24 << 3) | 1]),  # forbidden(1) reserved(1) layer(6) | type(5) tid+1(3): 24 = SUFFIX_SEI_NUT
}


# End-of-bitstream NAL units (HEVC EOB_NUT 37, VVC EOB_NUT 22) with a 3-byte start code: 5 bytes that let the
# decoder tell a complete raw stream from a truncated one (raw Annex-B has no length field, and FFmpeg silently
# conceals a cut-off slice).
END_OF_BITSTREAM = {"hevc": b"\x00\x00\x01" + bytes([37 << 1, 1]), "vvc": b"\x00\x00\x01" + bytes([0, (22 << 3) | 1])}


def is_complete(kind: str, data: bytes) -> bool:
    """True when the stream ends with its end-of-bitstream NAL (trailing zero bytes allowed)."""
    return data.rstrip(b"\x00").endswith(END_OF_BITSTREAM[kind])


def _emulation_prevent(rbsp: bytes) -> bytes:
    """Insert 0x03 after every 00 00 that precedes a byte <= 3 (ITU-T H.265 7.4.2)."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def _unescape(ebsp: bytes) -> bytes:
    return ebsp.replace(b"\x00\x00\x03", b"\x00\x00")


def size_sei(kind: str, width: int, height: int) -> bytes:
    """A complete Annex-B suffix-SEI NAL carrying the true (width, height)."""
    payload = SIZE_UUID + struct.pack(">II", width, height)
    rbsp = bytes([_USER_DATA_UNREGISTERED, len(payload)]) + payload + b"\x80"  # + rbsp_trailing_bits
    return _START + SUFFIX_SEI_HEADER[kind] + _emulation_prevent(rbsp)


def split_nals(data: bytes) -> list[bytes]:
    """NAL unit payloads (header included) of an Annex-B stream; empty list when there is no start code."""
    nals = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        end = len(data) if j < 0 else j
        nal = data[start:end]
        if j >= 0 and nal.endswith(b"\x00"):
            nal = nal.rstrip(b"\x00")  # trailing zero of a 4-byte start code
        nals.append(nal)
        i = j
    return nals


def read_size_sei(kind: str, data: bytes) -> tuple[int, int] | None:
    """The (width, height) stored by `size_sei`, or None when the stream has none."""
    header = SUFFIX_SEI_HEADER[kind]
    for nal in split_nals(data):
        if nal[:2] != header:
            continue
        rbsp = _unescape(nal[2:])
        if len(rbsp) >= 2 + 24 and rbsp[0] == _USER_DATA_UNREGISTERED and rbsp[2:18] == SIZE_UUID:
            width, height = struct.unpack(">II", rbsp[18:26])
            return width, height
    return None


class _Bits:
    """MSB-first bit reader over an RBSP with unsigned Exp-Golomb (ue(v)) reads; IndexError past the end."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("ue(v) too long")
        return (1 << zeros) - 1 + self.u(zeros)


HEVC_SPS = 33
_PTL_GENERAL_BITS = 88  # profile space..general constraint flags (H.265 7.3.3), then general_level_idc (8)


def hevc_sps_size(data: bytes) -> tuple[int, int] | None:
    """(pic_width, pic_height) in luma samples from the first HEVC SPS (H.265 7.3.2.2), or None if there is none
    or it cannot be parsed. Read before decoding so a tiny stream cannot make the decoder allocate a huge picture."""
    for nal in split_nals(data):
        if len(nal) < 3 or (nal[0] >> 1) & 0x3F != HEVC_SPS:
            continue
        try:
            b = _Bits(_unescape(nal[2:]))
            b.u(4)
            sub_layers = b.u(3)
            b.u(1)
            b.u(_PTL_GENERAL_BITS + 8)
            flags = [(b.u(1), b.u(1)) for _ in range(sub_layers)]
            if sub_layers:
                b.u(2 * (8 - sub_layers))
            for profile_present, level_present in flags:
                b.u(_PTL_GENERAL_BITS * profile_present + 8 * level_present)
            b.ue()  # sps_seq_parameter_set_id
            if b.ue() == 3:  # chroma_format_idc 4:4:4
                b.u(1)
            return b.ue(), b.ue()
        except (IndexError, ValueError):
            return None
    return None


VVC_SPS = 15
_VVC_GCI_FLAGS = 71  # general_constraints_info() fields before gci_num_additional_bits (H.266 7.3.3.2)


def _vvc_profile_tier_level(b: _Bits, max_sublayers_minus1: int) -> None:
    """Skip profile_tier_level(1, max_sublayers_minus1) (H.266 7.3.3.1)."""
    b.u(7 + 1 + 8 + 1 + 1)  # profile, tier, level, frame-only and multilayer flags
    if b.u(1):  # gci_present_flag
        b.u(_VVC_GCI_FLAGS)
        b.u(b.u(8))  # gci_num_additional_bits, then those bits
    b.u((8 - b.pos % 8) % 8)  # gci alignment
    present = [b.u(1) for _ in range(max_sublayers_minus1)]
    b.u((8 - b.pos % 8) % 8)  # ptl_reserved_zero_bit alignment
    b.u(8 * sum(present))  # sublayer_level_idc
    b.u(32 * b.u(8))  # ptl_num_sub_profiles x general_sub_profile_idc


def vvc_sps_size(data: bytes) -> tuple[int, int] | None:
    """(pic_width_max, pic_height_max) in luma samples from the first VVC SPS (H.266 7.3.2.4), or None if there is
    none or it cannot be parsed; read before decoding, as `hevc_sps_size` is."""
    for nal in split_nals(data):
        if len(nal) < 3 or (nal[1] >> 3) & 0x1F != VVC_SPS:
            continue
        try:
            b = _Bits(_unescape(nal[2:]))
            b.u(4 + 4)  # sps and vps ids
            sublayers = b.u(3)
            b.u(2 + 2)  # chroma format, log2 CTU size
            if b.u(1):  # sps_ptl_dpb_hrd_params_present_flag
                _vvc_profile_tier_level(b, sublayers)
            b.u(1)  # sps_gdr_enabled_flag
            if b.u(1):  # sps_ref_pic_resampling_enabled_flag
                b.u(1)
            return b.ue(), b.ue()
        except (IndexError, ValueError):
            return None
    return None
