//! RFC 6455 section 5.3 masking: 32-byte AVX2 vectors, 512 bytes a turn, where the CPU has AVX2
//! (detected at run time), and a portable loop of 128 bytes a turn everywhere else.
//!
//! Three operations: [`apply_mask`] masks (or unmasks) bytes in place; [`extend_masked`] appends
//! the masked copy of a slice to a buffer in one pass (the client's buffered writes: the
//! application's bytes are masked as they are copied into the frame, rather than copied, then
//! masked); [`mask_into`] writes the masked copy into uninitialised memory (the client's direct
//! writes, masked into a buffer on the stack).

use std::mem::MaybeUninit;

/// Bytes masked per turn of the portable loop. Its sixteen 8-byte XORs become eight 16-byte vector
/// loads, XORs and stores (SSE2, on any x86_64) with one loop test per 128 bytes: 0.21
/// instructions per byte, against 0.28 for the 8-byte loop the compiler vectorized on its own.
const BLOCK: usize = 128;

/// XORs `data` with the 4-byte `mask`, starting `offset` bytes into the mask cycle; returns the
/// offset for the byte after `data`. Masking twice with the same mask and offset restores the data.
#[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub))]
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) -> usize {
    let key = key_at(mask, offset);
    #[cfg(target_arch = "x86_64")]
    let done = avx2::mask(data, key);
    #[cfg(not(target_arch = "x86_64"))]
    let done = false;
    if !done {
        mask_portable(data, key);
    }
    (offset + data.len()) % 4
}

/// Appends `src`, masked as [`apply_mask`] would mask it (`offset` bytes into the mask cycle), to
/// `buf`, in one pass ([`mask_into`] the buffer's spare room); returns the offset for the byte
/// after `src`.
#[allow(unsafe_code)]
pub(crate) fn extend_masked(buf: &mut Vec<u8>, src: &[u8], mask: [u8; 4], offset: usize) -> usize {
    buf.reserve(src.len());
    let len = buf.len();
    mask_into(
        &mut buf.spare_capacity_mut()[..src.len()],
        src,
        key_at(mask, offset),
    );
    // SAFETY: `reserve` made room for `src.len()` bytes after `len`, and `mask_into` wrote every
    // one of them.
    unsafe { buf.set_len(len + src.len()) };
    (offset + src.len()) % 4
}

/// Writes `src` masked with `mask` (from offset 0) into the start of `dst`, which may be
/// uninitialised, in one pass; returns the masked bytes, `dst[..src.len()]`.
///
/// # Panics
/// If `dst` is shorter than `src`.
#[allow(unsafe_code)]
pub(crate) fn mask_into<'a>(dst: &'a mut [MaybeUninit<u8>], src: &[u8], mask: [u8; 4]) -> &'a [u8] {
    let dst = &mut dst[..src.len()];
    #[cfg(target_arch = "x86_64")]
    let done = avx2::copy(dst, src, mask);
    #[cfg(not(target_arch = "x86_64"))]
    let done = false;
    if !done {
        copy_masked_portable(dst, src, mask);
    }
    // SAFETY: every one of the `src.len()` bytes of `dst` was written above (by the AVX2 copy or
    // the portable one), so they are initialised `u8`s.
    unsafe { std::slice::from_raw_parts(dst.as_ptr().cast::<u8>(), dst.len()) }
}

/// The portable copy of [`mask_into`] (`dst` as long as `src`): 128 bytes a turn like
/// [`mask_portable`] (SSE2 vectors on x86_64), then 8 bytes at a time, then bytewise.
fn copy_masked_portable(dst: &mut [MaybeUninit<u8>], src: &[u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let copy_words = |out: &mut [[MaybeUninit<u8>; 8]], words: &[[u8; 8]]| {
        for (out, word) in out.iter_mut().zip(words) {
            let masked = (u64::from_ne_bytes(*word) ^ wide).to_ne_bytes();
            for (o, b) in out.iter_mut().zip(masked) {
                o.write(b);
            }
        }
    };
    let (blocks, rest) = src.as_chunks::<BLOCK>();
    let (out_blocks, out_rest) = dst.as_chunks_mut::<BLOCK>();
    for (out, block) in out_blocks.iter_mut().zip(blocks) {
        copy_words(out.as_chunks_mut::<8>().0, block.as_chunks::<8>().0);
    }
    let (words, tail) = rest.as_chunks::<8>();
    let (out_words, out_tail) = out_rest.as_chunks_mut::<8>();
    copy_words(out_words, words);
    for (i, (o, b)) in out_tail.iter_mut().zip(tail).enumerate() {
        o.write(b ^ key[i % 4]);
    }
}

/// The key as it applies from the first byte: the mask rotated by `offset` bytes. Every loop below
/// steps by a multiple of 4 bytes, so the key stays in phase through all of them.
fn key_at(mask: [u8; 4], offset: usize) -> [u8; 4] {
    u32::from_le_bytes(mask)
        .rotate_right(8 * (offset % 4) as u32)
        .to_le_bytes()
}

/// The portable loop: `data` XORed with `key` (already in phase with `data[0]`).
fn mask_portable(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let (blocks, rest) = data.as_chunks_mut::<BLOCK>();
    for block in blocks {
        for chunk in block.as_chunks_mut::<8>().0 {
            *chunk = (u64::from_ne_bytes(*chunk) ^ wide).to_ne_bytes();
        }
    }
    let (words, tail) = rest.as_chunks_mut::<8>();
    for chunk in words {
        *chunk = (u64::from_ne_bytes(*chunk) ^ wide).to_ne_bytes();
    }
    for (i, byte) in tail.iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// AVX2 (x86_64 CPUs since 2013), detected at run time. With [`mask_into`] and [`extend_masked`]
/// (writes into uninitialised memory) the only unsafe code of the crate. Each turn of the main
/// loop is sixteen 32-byte XORs (load and XOR in one instruction) and sixteen stores: about 0.07
/// instructions per byte, against 0.21 for the portable loop; [`copy`] does the copy and the mask
/// in the same instructions. What is left after the blocks goes 32 bytes at a time, and a last
/// partial lane is done as one whole lane ending at the end of the slice.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::mem::MaybeUninit;

    use std::arch::x86_64::{
        __m256i, _mm256_loadu_si256, _mm256_set1_epi32, _mm256_storeu_si256, _mm256_xor_si256,
    };

    /// Bytes per vector, and per turn of the main loop.
    const LANE: usize = 32;
    const BLOCK: usize = 512;

    fn detected() -> bool {
        std::is_x86_feature_detected!("avx2")
    }

    /// Masks `data` in place with `key` (in phase with `data[0]`) if the CPU has AVX2 and `data`
    /// is at least a lane long; returns whether it did.
    pub(super) fn mask(data: &mut [u8], key: [u8; 4]) -> bool {
        if data.len() < LANE || !detected() {
            return false;
        }
        // SAFETY: the CPU has AVX2 (just checked) and `data` is at least `LANE` bytes long.
        unsafe { mask_avx2(data, key) };
        true
    }

    /// Writes `src` masked with `key` into `dst` (as long as `src`) if the CPU has AVX2 and `src`
    /// is at least a lane long; returns whether it did (then every byte of `dst` is written).
    pub(super) fn copy(dst: &mut [MaybeUninit<u8>], src: &[u8], key: [u8; 4]) -> bool {
        assert_eq!(dst.len(), src.len());
        if src.len() < LANE || !detected() {
            return false;
        }
        // SAFETY: the CPU has AVX2 (just checked) and `src` is at least `LANE` bytes long; `dst`
        // is valid for `src.len()` bytes of writes and cannot overlap `src` (a mutable and a
        // shared borrow).
        unsafe { copy_masked_avx2(dst.as_mut_ptr().cast::<u8>(), src, key) };
        true
    }

    /// `key` repeated over a vector.
    #[target_feature(enable = "avx2")]
    fn splat(key: [u8; 4]) -> __m256i {
        _mm256_set1_epi32(i32::from_ne_bytes(key))
    }

    /// `dst[..LANE]` = `src[..LANE]` XOR `k`.
    ///
    /// # Safety
    /// `src` must be valid for `LANE` bytes of reads and `dst` for `LANE` bytes of writes (they
    /// may be the same; unaligned is fine).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn xor_lane(dst: *mut u8, src: *const u8, k: __m256i) {
        // SAFETY: the caller's contract.
        unsafe {
            let v = _mm256_loadu_si256(src.cast::<__m256i>());
            _mm256_storeu_si256(dst.cast::<__m256i>(), _mm256_xor_si256(v, k));
        }
    }

    /// # Safety
    /// The CPU must have AVX2; `data` must be at least `LANE` bytes long.
    #[target_feature(enable = "avx2")]
    unsafe fn mask_avx2(data: &mut [u8], key: [u8; 4]) {
        let len = data.len();
        debug_assert!(len >= LANE);
        let p = data.as_mut_ptr();
        let k = splat(key);
        // The last lane, read before anything is masked. If the lanes below leave a partial one,
        // this lane (masked with the key in phase at `len - LANE`) is stored last: it masks that
        // tail and rewrites the bytes it shares with the lane before with what they already are.
        // SAFETY: `len - LANE .. len` is inside `data`.
        let last = unsafe { _mm256_loadu_si256(p.add(len - LANE).cast::<__m256i>()) };
        let mut i = 0;
        while i + BLOCK <= len {
            for j in 0..BLOCK / LANE {
                // SAFETY: `i + LANE * j .. + LANE` is inside `i .. i + BLOCK`, inside `data`.
                unsafe { xor_lane(p.add(i + LANE * j), p.add(i + LANE * j), k) };
            }
            i += BLOCK;
        }
        while i + LANE <= len {
            // SAFETY: `i .. i + LANE` is inside `data`.
            unsafe { xor_lane(p.add(i), p.add(i), k) };
            i += LANE;
        }
        if i < len {
            // SAFETY: `len - LANE .. len` is inside `data`.
            unsafe {
                let k = splat(super::key_at(key, len));
                _mm256_storeu_si256(
                    p.add(len - LANE).cast::<__m256i>(),
                    _mm256_xor_si256(last, k),
                );
            }
        }
    }

    /// Writes `src` masked with `key` to `dst .. dst + src.len()`.
    ///
    /// # Safety
    /// The CPU must have AVX2; `src` must be at least `LANE` bytes long; `dst` must be valid for
    /// `src.len()` bytes of writes and not overlap `src`.
    #[target_feature(enable = "avx2")]
    unsafe fn copy_masked_avx2(dst: *mut u8, src: &[u8], key: [u8; 4]) {
        let len = src.len();
        debug_assert!(len >= LANE);
        let s = src.as_ptr();
        let k = splat(key);
        let mut i = 0;
        while i + BLOCK <= len {
            for j in 0..BLOCK / LANE {
                // SAFETY: `i + LANE * j .. + LANE` is inside `i .. i + BLOCK`, inside `src` and
                // inside the caller's `src.len()` bytes at `dst`.
                unsafe { xor_lane(dst.add(i + LANE * j), s.add(i + LANE * j), k) };
            }
            i += BLOCK;
        }
        while i + LANE <= len {
            // SAFETY: as above, one lane.
            unsafe { xor_lane(dst.add(i), s.add(i), k) };
            i += LANE;
        }
        if i < len {
            // The partial lane left: one whole lane ending at the end, with the key in phase at
            // `len - LANE` (it rewrites bytes already written with the same bytes).
            // SAFETY: `len - LANE .. len` is inside `src` and the caller's bytes at `dst`.
            unsafe {
                xor_lane(
                    dst.add(len - LANE),
                    s.add(len - LANE),
                    splat(super::key_at(key, len)),
                );
            }
        }
    }

    #[cfg(test)]
    pub(super) fn available() -> bool {
        detected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length up to 300 and some around the 512-byte AVX2 block, every key rotation (and offsets past 4),
    /// every start alignment within a 32-byte lane: `f` (masking `data` at `offset`, returning the
    /// masked bytes and the next offset) against the bytewise reference.
    fn check_against_reference(name: &str, f: impl Fn(&[u8], [u8; 4], usize) -> (Vec<u8>, usize)) {
        let mask = [0xa1, 0x5b, 0x3c, 0xe7];
        let backing: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8).collect();
        for start in 0..33 {
            for len in (0..300).chain([511, 512, 513, 543, 544, 545, 600]) {
                for offset in 0..9 {
                    let data = &backing[start..start + len];
                    let (got, next) = f(data, mask, offset);
                    assert_eq!(
                        got,
                        reference(data, mask, offset),
                        "{name}: start {start} len {len} offset {offset}"
                    );
                    assert_eq!(
                        next,
                        (offset + len) % 4,
                        "{name}: len {len} offset {offset}"
                    );
                }
            }
        }
    }

    #[test]
    fn portable_path_matches_reference() {
        check_against_reference("portable", |data, mask, offset| {
            let mut buf = data.to_vec();
            mask_portable(&mut buf, key_at(mask, offset));
            (buf, (offset + data.len()) % 4)
        });
    }

    #[test]
    fn extend_masked_matches_reference_and_keeps_what_was_there() {
        check_against_reference("extend_masked", |data, mask, offset| {
            let mut buf = vec![0x55; 3];
            let next = extend_masked(&mut buf, data, mask, offset);
            assert_eq!(&buf[..3], &[0x55; 3]);
            (buf[3..].to_vec(), next)
        });
    }

    #[test]
    fn mask_into_matches_reference() {
        check_against_reference("mask_into", |data, mask, offset| {
            let key = key_at(mask, offset);
            let mut out = vec![MaybeUninit::new(0x55u8); data.len() + 3];
            let masked = mask_into(&mut out, data, key).to_vec();
            (masked, (offset + data.len()) % 4)
        });
    }

    /// The bytes of `out`, every one of them written.
    #[allow(unsafe_code)]
    fn written(out: &[MaybeUninit<u8>]) -> Vec<u8> {
        // SAFETY: the callers pass slices whose every element was initialised.
        out.iter().map(|b| unsafe { b.assume_init() }).collect()
    }

    #[test]
    fn portable_copy_matches_reference() {
        check_against_reference("copy_masked_portable", |data, mask, offset| {
            let mut out = vec![MaybeUninit::new(0x55u8); data.len()];
            copy_masked_portable(&mut out, data, key_at(mask, offset));
            (written(&out), (offset + data.len()) % 4)
        });
    }

    /// The AVX2 paths (where this CPU has AVX2) against the portable one, for every length
    /// 0..300 and some around the 512-byte block, every key rotation and every alignment; both in
    /// place and copying.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_paths_match_the_portable_path() {
        if !avx2::available() {
            eprintln!("no AVX2 on this CPU: only the portable path runs here");
            return;
        }
        let backing: Vec<u8> = (0..1200u32).map(|i| (i * 13 + 5) as u8).collect();
        for mask in [[0xa1, 0x5b, 0x3c, 0xe7], [0xff, 0x00, 0x80, 0x01]] {
            for rotation in 0..4 {
                let key = key_at(mask, rotation);
                for start in 0..33 {
                    for len in (0..300).chain([511, 512, 513, 543, 544, 545, 1023, 1024, 1055]) {
                        let data = &backing[start..start + len];
                        let mut want = data.to_vec();
                        mask_portable(&mut want, key);

                        let mut in_place = data.to_vec();
                        let vectored = avx2::mask(&mut in_place, key);
                        assert_eq!(vectored, len >= 32, "len {len}");
                        if vectored {
                            assert_eq!(
                                in_place, want,
                                "mask: start {start} len {len} rot {rotation}"
                            );
                        }

                        let mut into = vec![MaybeUninit::new(0x55u8); len];
                        if avx2::copy(&mut into, data, key) {
                            assert_eq!(written(&into), want, "copy: start {start} len {len}");
                        } else {
                            assert!(len < 32, "len {len}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn mask_matches_bytewise_reference_at_every_offset_and_length() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            for offset in 0..8 {
                let data: Vec<u8> = (0..len as u8).collect();
                let mut fast = data.clone();
                let next = apply_mask(&mut fast, mask, offset);
                let slow: Vec<u8> = data
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(i + offset) % 4])
                    .collect();
                assert_eq!(fast, slow, "len {len} offset {offset}");
                assert_eq!(next, (offset + len) % 4);
            }
        }
    }

    /// The bytewise reference of RFC 6455 section 5.3.
    fn reference(data: &[u8], mask: [u8; 4], offset: usize) -> Vec<u8> {
        data.iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[(i + offset) % 4])
            .collect()
    }

    #[test]
    fn mask_matches_reference_across_blocks_at_every_alignment_offset_and_length() {
        // Every length up to past two 128-byte blocks (blocks, then 8-byte words, then the
        // bytewise tail), a few longer; every start alignment within a 16-byte vector lane and
        // one more; every mask offset, and a few past 4.
        let mask = [0xa1, 0x5b, 0x3c, 0xe7];
        let backing: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8).collect();
        for start in 0..17 {
            for len in (0..=300).chain([383, 384, 385, 391, 512, 640, 671]) {
                if start + len > backing.len() {
                    continue;
                }
                for offset in 0..9 {
                    let mut buf = backing.clone();
                    let next = apply_mask(&mut buf[start..start + len], mask, offset);
                    let want = reference(&backing[start..start + len], mask, offset);
                    assert_eq!(
                        &buf[start..start + len],
                        &want[..],
                        "start {start} len {len} offset {offset}"
                    );
                    assert_eq!(next, (offset + len) % 4);
                    // Nothing outside the slice is touched.
                    assert_eq!(&buf[..start], &backing[..start]);
                    assert_eq!(&buf[start + len..], &backing[start + len..]);
                }
            }
        }
    }

    #[test]
    fn masking_in_pieces_equals_masking_at_once() {
        let mask = [1, 2, 3, 4];
        let data: Vec<u8> = (0..=255).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, mask, 0);
        let mut pieces = data.clone();
        let mut offset = 0;
        for chunk in pieces.chunks_mut(7) {
            offset = apply_mask(chunk, mask, offset);
        }
        assert_eq!(whole, pieces);
        apply_mask(&mut pieces, mask, 0);
        assert_eq!(pieces, data, "masking twice restores the data");
    }

    proptest::proptest! {
        #[test]
        fn masking_any_bytes_in_any_pieces_equals_the_reference(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..2000),
            mask in proptest::array::uniform4(proptest::num::u8::ANY),
            offset in 0usize..8,
            cut in 0usize..2000,
        ) {
            let want = reference(&data, mask, offset);
            let cut = cut.min(data.len());
            let mut in_place = data.clone();
            let mid = apply_mask(&mut in_place[..cut], mask, offset);
            apply_mask(&mut in_place[cut..], mask, mid);
            proptest::prop_assert_eq!(&in_place, &want);
            let mut copied = Vec::new();
            let mid = extend_masked(&mut copied, &data[..cut], mask, offset);
            extend_masked(&mut copied, &data[cut..], mask, mid);
            proptest::prop_assert_eq!(&copied, &want);
        }
    }
}
