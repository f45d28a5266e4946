//! Giving the pages of cold KV blocks back to the operating system (CPU pools on Linux).
//!
//! Runs on the thread that owns the cache, between forward steps. A block's bytes in a pool are
//! `[base + b * block_bytes, base + (b + 1) * block_bytes)`; blocks need not be page-aligned, so
//! a page is given back only when every block it overlaps is cold and it lies wholly inside the
//! pool's buffer.
//!
//! Why this is safe: `MADV_DONTNEED` on private anonymous memory makes the pages read back as
//! zeros, a valid bit pattern of f16, bf16 and f32, and the op holds `&mut` to the storage, so
//! nothing reads it meanwhile. Nor is any stale value relied on: a cold block belongs to no
//! sequence, and a block is always written before it is read. Attention reads positions
//! `0..len` of a sequence only, each written by [`super::KvCache::write`] in the step that
//! computed it, and a prefix hit hands out only blocks registered once computed in full.

use candle_core::{CpuStorage, Layout};

/// The page-aligned address ranges `[lo, hi)` that can go back when `blocks` turned cold:
/// pages wholly inside `[base, base + len)` whose every overlapping block is cold. Sorted and
/// merged.
pub(super) fn releasable_ranges(
    (base, len): (usize, usize),
    block_bytes: usize,
    page: usize,
    blocks: &[u32],
    is_cold: &dyn Fn(u32) -> bool,
) -> Vec<(usize, usize)> {
    let end_of_pool = base + len;
    // Every block overlapping `[lo, hi)` (inside the pool) is cold.
    let all_cold = |lo: usize, hi: usize| {
        let first = (lo - base) / block_bytes;
        let last = (hi - 1 - base) / block_bytes;
        (first..=last).all(|b| is_cold(b as u32))
    };
    let mut sorted: Vec<u32> = blocks.iter().copied().filter(|&b| is_cold(b)).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(usize, usize)> = Vec::new();
    for b in sorted {
        let start = base + b as usize * block_bytes;
        let end = start + block_bytes;
        if end > end_of_pool {
            continue;
        }
        let mut lo = start / page * page;
        if lo < start && (lo < base || !all_cold(lo, start)) {
            lo += page;
        }
        let mut hi = end.div_ceil(page) * page;
        if hi > end && (hi > end_of_pool || !all_cold(end, hi)) {
            hi -= page;
        }
        if lo >= hi {
            continue;
        }
        match out.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// The system's page size.
pub(super) fn page_size() -> usize {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf reads a constant of the running system; no memory is touched.
        #[allow(unsafe_code)]
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            return p as usize;
        }
    }
    4096
}

/// In-place op on one pool: gives back the pages of `blocks` (those still cold).
pub(super) struct GiveBack<'a> {
    pub block_bytes: usize,
    pub blocks: &'a [u32],
    pub is_cold: &'a dyn Fn(u32) -> bool,
}

impl candle_core::InplaceOp1 for GiveBack<'_> {
    fn name(&self) -> &'static str {
        "kv-give-back"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let (ptr, len) = match storage {
            CpuStorage::F16(v) => bytes_of(v, layout),
            CpuStorage::BF16(v) => bytes_of(v, layout),
            CpuStorage::F32(v) => bytes_of(v, layout),
            _ => return Ok(()),
        };
        let ranges = releasable_ranges(
            (ptr, len),
            self.block_bytes,
            page_size(),
            self.blocks,
            self.is_cold,
        );
        for (lo, hi) in ranges {
            advise_dontneed(lo, hi - lo)?;
        }
        Ok(())
    }
}

/// Address and length in bytes of the pool's elements from the layout's start on.
fn bytes_of<T>(v: &mut [T], layout: &Layout) -> (usize, usize) {
    let v = v.get_mut(layout.start_offset()..).unwrap_or_default();
    (v.as_mut_ptr() as usize, std::mem::size_of_val(v))
}

#[cfg(target_os = "linux")]
fn advise_dontneed(addr: usize, len: usize) -> candle_core::Result<()> {
    // SAFETY: `[addr, addr + len)` is page-aligned and lies wholly inside the pool's buffer,
    // which the caller holds `&mut` (see the module note: the pages read back as zeros and no
    // cold block is read before it is written).
    #[allow(unsafe_code)]
    let rc = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if rc != 0 {
        return Err(candle_core::Error::Msg(format!(
            "madvise(MADV_DONTNEED) on {len} bytes of the KV pool failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn advise_dontneed(_addr: usize, _len: usize) -> candle_core::Result<()> {
    Ok(())
}

/// Bytes of `[addr, addr + len)` resident in memory now (whole pages overlapping it).
#[cfg(all(test, target_os = "linux"))]
pub(super) fn resident_bytes(addr: usize, len: usize) -> usize {
    let page = page_size();
    let lo = addr / page * page;
    let pages = (addr + len - lo).div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: mincore only reads the page tables of a range of our own address space, writing
    // one byte per page into `vec`, which has that many.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::mincore(lo as *mut libc::c_void, pages * page, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&v| v & 1 == 1).count() * page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(block_bytes: usize, cold: &[u32], blocks: &[u32]) -> Vec<(usize, usize)> {
        let is_cold = |b: u32| cold.contains(&b);
        // A pool of 8 blocks starting 16 bytes past a page, as a large malloc returns it.
        releasable_ranges(
            (4096 + 16, 8 * block_bytes),
            block_bytes,
            4096,
            blocks,
            &is_cold,
        )
    }

    #[test]
    fn a_page_goes_back_only_when_every_block_on_it_is_cold() {
        // Blocks of 6 KiB: block 1 spans [10256, 16400), wholly covering page [12288, 16384).
        assert_eq!(ranges(6144, &[1], &[1]), vec![(12288, 16384)]);
        // With block 2 cold too, the page they share goes back as well.
        assert_eq!(ranges(6144, &[1, 2], &[1, 2]), vec![(12288, 20480)]);
        // A block reported cold but taken again since gives nothing back.
        assert!(ranges(6144, &[], &[1]).is_empty());
        // Blocks smaller than a page: a page needs all of its blocks cold.
        assert!(ranges(1024, &[1, 2, 3], &[1, 2, 3]).is_empty());
        // Page [8192, 12288) overlaps blocks 3 to 7.
        assert_eq!(ranges(1024, &[3, 4, 5, 6, 7], &[4]), vec![(8192, 12288)]);
        assert!(ranges(1024, &[3, 4, 5, 6], &[4]).is_empty());
    }

    #[test]
    fn pages_outside_the_pool_are_never_given_back() {
        // Block 0 starts 16 bytes into a page that holds memory before the pool.
        let all: Vec<u32> = (0..8).collect();
        let got = ranges(4096, &all, &all);
        // The pool is [4112, 36880): its first and last pages hold other memory too.
        assert_eq!(got, vec![(8192, 36864)]);
    }
}
