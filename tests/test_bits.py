"""Property tests of the bit tricks against numpy, widths that are not multiples of 8 included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebnn_codegen import bits

pytestmark = pytest.mark.quick  # the pre-commit subset (pytest -m quick)


@settings(max_examples=200, deadline=None)
@given(c=st.integers(1, 40), h=st.integers(1, 6), w=st.integers(1, 6), seed=st.integers(0, 2**31))
def test_pack_unpack_roundtrip(c: int, h: int, w: int, seed: int) -> None:
    a = np.random.default_rng(seed).choice(np.array([-1, 1], np.int8), size=(3, c, h, w))
    packed = bits.pack_activations(a)
    assert packed.shape == (3, h * w * ((c + 7) // 8))
    assert np.array_equal(bits.unpack_activations(packed, (c, h, w)), a)


@settings(max_examples=200, deadline=None)
@given(c=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_pad_bits_are_zero_and_layout(c: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.choice(np.array([-1, 1], np.int8), size=(c, 2, 3))
    packed = bits.pack_activations(a)
    cb = (c + 7) // 8
    for y in range(2):
        for x in range(3):
            for ch in range(cb * 8):
                bit = (packed[(y * 3 + x) * cb + ch // 8] >> (ch % 8)) & 1
                expect = int(ch < c and a[ch, y, x] > 0)
                assert bit == expect


@settings(max_examples=200, deadline=None)
@given(c=st.integers(1, 40), taps=st.integers(1, 9), seed=st.integers(0, 2**31))
def test_xor_popcount_dot_equals_numpy(c: int, taps: int, seed: int) -> None:
    """dot = n - 2 * popcount(a XOR w) over packed bytes with zero pad bits."""
    rng = np.random.default_rng(seed)
    a = rng.choice(np.array([-1, 1], np.int8), size=(c, 1, taps))
    w = rng.choice(np.array([-1, 1], np.int8), size=(c, 1, taps))
    pa, pw = bits.pack_activations(a), bits.pack_activations(w)
    mism = int(np.unpackbits(pa ^ pw).sum())
    assert c * taps - 2 * mism == int((a.astype(int) * w).sum())


@settings(max_examples=100, deadline=None)
@given(f=st.integers(1, 9), c=st.integers(1, 5), kh=st.integers(1, 4), kw=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_weight_layouts_roundtrip(f: int, c: int, kh: int, kw: int, seed: int) -> None:
    w = np.random.default_rng(seed).choice(np.array([-1, 1], np.int8), size=(f, c, kh, kw))
    assert np.array_equal(bits.unpack_weights_hwc(bits.pack_weights_hwc(w), w.shape), w)
    s = bits.pack_weights_stream(w)
    assert s.shape == (f, (c * kh * kw + 7) // 8)
    assert np.array_equal(bits.unpack_weights_stream(s, w.shape), w)


def test_worked_example_from_docs() -> None:
    a = np.full((10, 1, 2), -1, np.int8)
    a[[0, 3, 9], 0, 0] = 1
    assert bits.pack_activations(a).tolist() == [0x09, 0x02, 0x00, 0x00]
