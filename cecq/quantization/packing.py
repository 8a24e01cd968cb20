"""Bit packing of per-dimension codes: ``bits`` divides 8, codes laid out in order, each most
significant bit first (``np.packbits`` order)."""

from __future__ import annotations

import numpy as np

VALID_BITS: tuple[int, ...] = (1, 2, 4, 8)


def bytes_per_vector(dim: int, bits: int) -> int:
    return (dim * bits + 7) // 8


def per_byte(bits: int) -> int:
    return 8 // bits  # codes a byte holds (8 bits: one)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Bit-pack ``(n, dim)`` codes below ``2**bits`` into ``(n, ceil(dim*bits/8))`` uint8.

    Codes are laid out in order, each most significant bit first (``np.packbits`` order).
    """
    if bits not in VALID_BITS:
        raise ValueError(f"bits must be one of {VALID_BITS}, got {bits}")
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D, got shape {codes.shape}")
    if bits == 8:
        return codes.astype(np.uint8, copy=True)
    if codes.size and int(codes.max()) >= (1 << bits):
        raise ValueError(f"a code is >= 2**{bits}")
    # bits divides 8: a byte holds 8 // bits whole codes, so shift and OR them together
    # (no per-bit planes: an (n, dim, bits) temporary costs more than the packing itself).
    n, dim = codes.shape
    per = per_byte(bits)
    width = bytes_per_vector(dim, bits)
    padded = np.zeros((n, width * per), dtype=np.uint8)
    padded[:, :dim] = codes
    out = np.zeros((n, width), dtype=np.uint8)
    for j in range(per):
        out |= padded[:, j::per] << np.uint8(8 - bits * (j + 1))
    return out


def byte_table(bits: int) -> np.ndarray:
    """``(256, 8 // bits)`` uint8: the codes each byte value holds, in order."""
    per = per_byte(bits)
    shifts = np.array([8 - bits * (j + 1) for j in range(per)], dtype=np.uint8)
    return ((np.arange(256, dtype=np.uint8)[:, None] >> shifts) & np.uint8((1 << bits) - 1)).astype(np.uint8)


def unpack_codes(packed: np.ndarray, dim: int, bits: int) -> np.ndarray:
    """Exact inverse of :func:`pack_codes`."""
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.ndim != 2 or packed.shape[1] != bytes_per_vector(dim, bits):
        raise ValueError(f"packed codes of shape {packed.shape} do not hold {dim} dims at {bits} bits")
    if bits == 8:
        return packed.copy()
    # One table lookup per byte instead of unpacking bits and summing planes.
    return byte_table(bits)[packed].reshape(packed.shape[0], packed.shape[1] * per_byte(bits))[:, :dim]
