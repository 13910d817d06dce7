"""The typed plan of a generated kernel (the ``fast`` strategy, docs/speed.md).

:mod:`ebnn_codegen.codegen.kernels` builds these from a block; ``templates/model.c.j2`` only
iterates over them and branches on their flags.  Every number the C needs is a field here;
literals that C spells in hex (masks, weight bytes, bounds) are carried ready-formatted so the
template never formats or computes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PoolRange:
    """The outputs ``[lo, hi)`` whose pool window holds one conv row/column, and its border class."""

    lo: int
    hi: int
    cls: int


@dataclass(frozen=True)
class Tap:
    """One byte ``a<k>`` of the gathered window: kernel row ``i``, column ``j``, input channel ``c``
    (first block) or channel byte ``n`` (binary block); ``offset`` from the window's corner."""

    k: int
    i: int
    j: int
    c: int
    n: int
    offset: int
    buf: int = 0  # first block on AVR: offset in the zero-padded row buffer


@dataclass(frozen=True)
class BufRow:
    """Row ``r`` of the first block's AVR buffer: kernel row ``i`` of input channel ``c``."""

    r: int
    c: int
    i: int


@dataclass(frozen=True)
class HPool:
    """First block on AVR: pooled byte ``dst`` of a conv row is the OR of its conv bytes ``srcs``."""

    dst: int
    srcs: tuple[int, ...]


@dataclass(frozen=True)
class Segment:
    """Binary block on AVR: ``count`` consecutive conv columns from ``cx0`` of column class
    ``cls``, starting at byte ``offset`` of the row buffer."""

    cx0: int
    count: int
    cls: int
    offset: int


@dataclass(frozen=True)
class RingPhase:
    """First block on AVR, stride 1: the statement for conv rows ``cy`` with ``cy % kh == phase``
    (window row ``i`` of channel ``c`` in buffer row ``c * kh + (phase + i) % kh``)."""

    phase: int
    lines: tuple[str, ...]


@dataclass(frozen=True)
class SharedSum:
    """``int name = a + b;``: a pair of taps common to several first-block filters, summed once."""

    name: str
    a: str
    b: str


@dataclass(frozen=True)
class U8Filter:
    """First block: ``acc = 2 * sum(terms) - s`` (``plus``) or ``s - 2 * sum(terms)``; bit = acc >= t."""

    f: int
    byte: int
    mask: str
    t: int
    plus: bool
    terms: tuple[str, ...]


@dataclass(frozen=True)
class PopTerm:
    """``popcount(a<k> ^ w)``; ``w == 0`` needs no XOR."""

    k: int
    w: int
    w_hex: str


@dataclass(frozen=True)
class WordPart:
    """Byte ``a<k>`` at bit ``shift`` of a 32-bit window word."""

    k: int
    shift: int


@dataclass(frozen=True)
class Word:
    name: str
    parts: tuple[WordPart, ...]


@dataclass(frozen=True)
class WordXor:
    """``ebnn_swar_nib(w<word> ^ kw[kw], ...)``: one window word against one weight word."""

    word: int
    kw: int


@dataclass(frozen=True)
class BinFilter:
    """Binary block: ``m = sum popcount(a ^ w)``; the bit is ``m < bound``.

    ``groups``: the SWAR terms of the 32-bit count (at most 3 words a group); ``tail_w``: the
    weight of the single last byte (``has_tail``); ``interior_bound``: the interior class's
    ``bound << 24`` (0: the bit is never set there); ``asm``: the lines of the AVR statement.
    """

    f: int
    byte: int
    mask: str
    terms: tuple[PopTerm, ...]
    asm: tuple[str, ...]
    groups: tuple[tuple[WordXor, ...], ...]
    tail_w: int
    tail_hex: str
    interior_bound: int
    interior_hex: str


@dataclass(frozen=True)
class FlipByte:
    byte: int
    value: str


@dataclass(frozen=True)
class KernelPlan:
    """Geometry shared by both kinds of generated kernel."""

    first: bool
    window: int
    pixel_bytes: int  # bytes per input pixel in the interior gather (1 for the first block)
    cbo: int
    bytes_out: tuple[int, ...]
    in_h: int
    in_w: int
    k_h: int
    k_w: int
    kernel_rows: tuple[int, ...]
    kernel_cols: tuple[int, ...]
    s_h: int
    s_w: int
    p_h: int
    p_w: int
    conv_h: int
    conv_w: int
    out_w: int
    out_pixels: int
    out_bytes: int
    max_y0: int
    max_x0: int
    has_interior: bool
    rows: tuple[PoolRange, ...]
    cols: tuple[PoolRange, ...]
    gather: tuple[Tap, ...]
    flips: tuple[FlipByte, ...]


@dataclass(frozen=True)
class U8KernelPlan(KernelPlan):
    """First block. With ``avr_u8`` the AVR function is emitted: per conv row, ``avr_asm`` (one
    statement over the row, clobbering ``avr_clobbers``) reads a zero-padded buffer of
    ``avr_nrows`` rows of ``avr_wp`` bytes and writes ``avr_crow`` conv output bytes; they are
    pooled into ``avr_hrow`` bytes along x (``avr_hpool``), then ORed into the output rows.
    ``avr_ring`` (vertical stride 1): the buffer is a ring of ``kh`` rows per channel
    (``avr_channels``), one new input row copied per conv row, one statement per phase."""

    pairs: tuple[SharedSum, ...]
    filters: tuple[U8Filter, ...]
    avr_asm: tuple[str, ...] = ()
    avr_clobbers: tuple[str, ...] = ()
    avr_u8: bool = False
    avr_nrows: int = 0
    avr_wp: int = 0
    avr_crow: int = 0
    avr_hrow: int = 0
    avr_buf_rows: tuple[BufRow, ...] = ()
    avr_hpool: tuple[HPool, ...] = ()
    avr_ring: tuple[RingPhase, ...] = ()
    avr_channels: tuple[int, ...] = ()


@dataclass(frozen=True)
class SlicedPlan:
    """The bit-sliced binary conv kernel of the 32-bit targets (:mod:`.sliced`): C statements are
    carried ready-made, the template lays them out (``templates/_sliced.j2``)."""

    layout: str  # for the comment: "2 conv rows of 16 lanes"
    rw_type: str  # the transposed rows: uint16_t (16 lanes) or uint32_t
    rows_per_word: int
    groups: int
    channels: int
    rw_rows: int
    transpose: tuple[str, ...]  # statements of the per-row transposition loop body
    planes: tuple[str, ...]  # statements filling pl[] for group g (``r`` points at rw[rows_per_word * g])
    n_planes: int
    window_sum: tuple[str, ...]  # the S counter: statements storing sp[]
    n_sum: int
    filters: tuple[tuple[str, ...], ...]  # per filter: statements ending in hw[slot][f] = ...
    bound_rows: tuple[str, ...]  # the bound planes table, one row per group class (may be empty)
    n_bound_words: int
    group_class: tuple[int, ...]
    n_group_classes: int
    out_rows: tuple[tuple[int, int, int], ...]  # conv rows [lo, hi) of each output row, its last group
    ring: int  # groups kept in hw (a power of 2)
    ring_mask: int
    gather_out: tuple[tuple[str, ...], ...]  # per output byte n: the statements of one output row
    out_h: int
    uses_planes: bool  # some filter reads a plane or S (else no filter's bit depends on the input)
    uses_sum: bool  # some filter reads S


@dataclass(frozen=True)
class BinKernelPlan(KernelPlan):
    """Binary kernel. Flags: ``avr_asm`` (emit the asm variant), ``border_bounds`` (a bounds table
    per border class), ``has_interior_class`` (interior bounds as immediates), ``interior_guard``
    (the immediates only where the preprocessor says the chip shifts cheaply), ``uses_swar`` (some
    filter counts with SWAR words: the weight-word table is emitted; the SWAR helpers themselves are
    the runtime header's ``ebnn_swar_nib``/``ebnn_swar_fold``). ``avr_row``: the AVR function by
    rows is emitted (:mod:`~ebnn_codegen.codegen.avr_bin`: a statement ``avr_asm_row`` a column
    segment over a buffer of ``k_h`` rows of ``avr_wp`` bytes, bounds in the statement's order)."""

    filters: tuple[BinFilter, ...]
    interior_filters: tuple[BinFilter, ...]
    n_col_classes: int
    n_classes: int
    bounds_rows: tuple[str, ...]
    bounds32_rows: tuple[str, ...]
    words: tuple[Word, ...]
    wk_rows: tuple[str, ...]
    wk_len: int
    has_tail: bool
    tail: str
    avr_asm: bool
    border_bounds: bool
    has_interior_class: bool
    interior_class: int
    interior_guard: bool
    interior_immediates: bool
    uses_swar: bool
    avr_row: bool = False
    avr_asm_row: tuple[str, ...] = ()
    avr_asm_inner: tuple[str, ...] = ()
    avr_inner_cls: int = -1
    avr_clobbers: tuple[str, ...] = ()
    avr_wp: int = 0
    avr_pad: int = 0
    avr_segments: tuple[Segment, ...] = ()
    avr_nseg: int = 0
    avr_hpool: tuple[HPool, ...] = ()
    avr_hrow: int = 0
    avr_bounds_rows: tuple[str, ...] = ()
    sliced: SlicedPlan | None = None  # 32-bit targets: the bit-sliced kernel (.sliced)


@dataclass(frozen=True)
class LinearAvrPlan:
    """A binary linear block on AVR: the rows interleaved byte by byte in groups of eight
    (``groups`` groups of ``8 * n`` bytes, ``w_rows`` their C rows; missing rows of the last
    group are zero), counted eight at a time by ``ebnn_mismatch8_avr``; the bit of row ``f`` is
    ``m < bound[f]`` (``bounds_rows``: uint16, 0 for the padding rows; none for the exit), then
    the flips; the exit's count is ``total - 2 m``."""

    groups: int
    n: int
    total: int
    w_rows: tuple[tuple[str, ...], ...]
    bounds_rows: tuple[str, ...]
    flips: tuple[FlipByte, ...]
