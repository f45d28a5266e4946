//! Load-time repacking of GGUF blocks into the column-interleaved layout of the SIMD kernels.
//!
//! Output rows (matrix rows of `W[n, k]`, i.e. output columns of `y = x·Wᵀ`) go in groups of
//! [`COLS`] = 16; the last group is padded with zero rows. Within a group, for every block along
//! `k`, the quants of 4 consecutive values of all 16 rows sit in one 64-byte line: row `c`'s 4
//! bytes at `4c`. One vector load then feeds `vpdpbusd` (or `vpmaddubsw`) 16 (AVX-512) or 8
//! (AVX2, half a line) columns against 4 activations broadcast to every lane, and the result
//! lands per column with no horizontal sum. 4-bit types keep two such "quads" per line, in the
//! low and high nibbles, so the packed weights are as small as the GGUF ones.
//!
//! Per (group, block) a type has `qs` bytes (quants) and `sc` bytes (scales); the two go in two
//! arrays so both stream linearly:
//!
//! | type | values | qs | sc |
//! |---|---|---|---|
//! | Q4_0 | 32 | 4 lines: line `c` low nibbles = quad `c`, high = quad `c+4` | `d: [f16; 16]` |
//! | Q4_1 | 32 | as Q4_0 | `d: [f16; 16], m: [f16; 16]` |
//! | Q8_0 | 32 | 8 lines, line `c` = quad `c`, stored `w ^ 0x80` (= `w + 128` as u8) | `d: [f16; 16]` |
//! | Q4_K | 256 | per 32-value sub-block `i`, 4 lines as Q4_0 | `d, dmin: [f16; 16]`, `sc: [[u8; 16]; 8]`, `m: [[[u8; 2]; 16]; 4]` (pairs of sub-blocks) |
//! | Q6_K | 256 | per 16-value sub-block `i`, 3 lines: low nibbles of quads `4i..4i+4` two per line, then their 2 high bits, four per byte | `d: [f16; 16]`, `sc: [[[i8; 2]; 16]; 8]` (pairs of sub-blocks) |

use super::formats::{Q4KBlock, Q6KBlock, WeightType};

/// Output columns per group.
pub const COLS: usize = 16;
const LINE: usize = 64;

/// Bytes of quants per (group, block).
pub fn qs_bytes(kind: WeightType) -> usize {
    match kind {
        WeightType::Q4_0 | WeightType::Q4_1 => 4 * LINE,
        WeightType::Q8_0 => 8 * LINE,
        WeightType::Q4K => 8 * 4 * LINE,
        WeightType::Q6K => 16 * 3 * LINE,
    }
}

/// Bytes of scales per (group, block).
pub fn sc_bytes(kind: WeightType) -> usize {
    match kind {
        WeightType::Q4_0 | WeightType::Q8_0 => 2 * COLS,
        WeightType::Q4_1 => 4 * COLS,
        WeightType::Q4K => 4 * COLS + 8 * COLS + 8 * COLS,
        WeightType::Q6K => 2 * COLS + 16 * COLS,
    }
}

/// A zeroed byte buffer aligned to 64, so every line of the packed weights is one cache line.
pub struct AlignedBytes {
    lines: Vec<Line>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; LINE]);

impl AlignedBytes {
    pub fn zeroed(len: usize) -> Self {
        Self {
            lines: vec![Line([0; LINE]); len.div_ceil(LINE)],
            len,
        }
    }

    #[allow(unsafe_code)]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `lines` is a live allocation of `lines.len() * 64 >= len` initialized bytes
        // (`Line` is a plain byte array, no padding), borrowed for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<u8>(), self.len) }
    }

    #[allow(unsafe_code)]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and the `&mut self` borrow makes the slice unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// Weights in the interleaved layout. Immutable once built.
pub struct Interleaved {
    pub kind: WeightType,
    /// Output columns (rows of `W`), and groups of [`COLS`] of them.
    pub n: usize,
    pub groups: usize,
    /// Blocks along `k`.
    pub blocks: usize,
    /// `[groups][blocks][qs_bytes]`.
    pub qs: AlignedBytes,
    /// `[groups][blocks][sc_bytes]`.
    pub sc: AlignedBytes,
}

impl Interleaved {
    /// Packs `n` rows of `blocks` GGUF blocks each (`raw` as the file holds them).
    pub fn pack(kind: WeightType, raw: &[u8], n: usize, blocks: usize) -> Self {
        assert_eq!(
            raw.len(),
            n * blocks * kind.block_bytes(),
            "invariant: the caller checked the tensor size"
        );
        let groups = n.div_ceil(COLS);
        let (qb, sb) = (qs_bytes(kind), sc_bytes(kind));
        let mut qs = AlignedBytes::zeroed(groups * blocks * qb);
        let mut sc = AlignedBytes::zeroed(groups * blocks * sb);
        let (qsm, scm) = (qs.as_mut_slice(), sc.as_mut_slice());
        let bb = kind.block_bytes();
        for row in 0..n {
            let (g, c) = (row / COLS, row % COLS);
            for b in 0..blocks {
                let src = &raw[(row * blocks + b) * bb..][..bb];
                let at = g * blocks + b;
                let q = &mut qsm[at * qb..][..qb];
                let s = &mut scm[at * sb..][..sb];
                match kind {
                    WeightType::Q4_0 => {
                        pack_q4_quads(q, c, &src[2..18]);
                        s[2 * c..2 * c + 2].copy_from_slice(&src[0..2]);
                    }
                    WeightType::Q4_1 => {
                        pack_q4_quads(q, c, &src[4..20]);
                        s[2 * c..2 * c + 2].copy_from_slice(&src[0..2]);
                        s[2 * COLS + 2 * c..][..2].copy_from_slice(&src[2..4]);
                    }
                    WeightType::Q8_0 => {
                        for (j, &w) in src[2..34].iter().enumerate() {
                            q[(j / 4) * LINE + 4 * c + j % 4] = w ^ 0x80;
                        }
                        s[2 * c..2 * c + 2].copy_from_slice(&src[0..2]);
                    }
                    WeightType::Q4K => pack_q4k(q, s, c, src),
                    WeightType::Q6K => pack_q6k(q, s, c, src),
                }
            }
        }
        Self {
            kind,
            n,
            groups,
            blocks,
            qs,
            sc,
        }
    }
}

/// GGUF's 4-bit block (`qs[j]` holds values `j` and `j + 16`) into 4 lines: line `l`, column
/// `c`, byte `t` holds values `4l + t` (low nibble) and `16 + 4l + t` (high) — `qs[4l + t]`.
fn pack_q4_quads(lines: &mut [u8], c: usize, qs: &[u8]) {
    for l in 0..4 {
        lines[l * LINE + 4 * c..][..4].copy_from_slice(&qs[4 * l..4 * l + 4]);
    }
}

/// 32 4-bit values (value order) into 4 lines, as [`pack_q4_quads`] lays them out.
fn pack_q4_values(lines: &mut [u8], c: usize, q: &[u8]) {
    for l in 0..4 {
        for t in 0..4 {
            lines[l * LINE + 4 * c + t] = q[4 * l + t] | (q[16 + 4 * l + t] << 4);
        }
    }
}

fn pack_q4k(q: &mut [u8], s: &mut [u8], c: usize, src: &[u8]) {
    let blk = Q4KBlock::parse(src);
    for i in 0..8 {
        pack_q4_values(&mut q[i * 4 * LINE..], c, &blk.q[32 * i..32 * i + 32]);
    }
    s[2 * c..2 * c + 2].copy_from_slice(&src[0..2]);
    s[2 * COLS + 2 * c..][..2].copy_from_slice(&src[2..4]);
    let (scales, mins) = (4 * COLS, 4 * COLS + 8 * COLS);
    for i in 0..8 {
        s[scales + i * COLS + c] = blk.sc[i];
        s[mins + (i / 2) * 2 * COLS + 2 * c + i % 2] = blk.m[i];
    }
}

fn pack_q6k(q: &mut [u8], s: &mut [u8], c: usize, src: &[u8]) {
    let blk = Q6KBlock::parse(src);
    for i in 0..16 {
        let lines = &mut q[i * 3 * LINE..];
        let v = &blk.q[16 * i..16 * i + 16];
        for t in 0..4 {
            // Quads 4i and 4i+1 share line 0, 4i+2 and 4i+3 line 1 (low nibbles, then high).
            lines[4 * c + t] = (v[t] & 0x0F) | ((v[4 + t] & 0x0F) << 4);
            lines[LINE + 4 * c + t] = (v[8 + t] & 0x0F) | ((v[12 + t] & 0x0F) << 4);
            lines[2 * LINE + 4 * c + t] = (v[t] >> 4)
                | ((v[4 + t] >> 4) << 2)
                | ((v[8 + t] >> 4) << 4)
                | ((v[12 + t] >> 4) << 6);
        }
    }
    s[2 * c..2 * c + 2].copy_from_slice(&src[208..210]);
    for i in 0..16 {
        s[2 * COLS + (i / 2) * 2 * COLS + 2 * c + i % 2] = blk.sc[i] as u8;
    }
}
