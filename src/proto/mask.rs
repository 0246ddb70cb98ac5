//! RFC 6455 section 5.3 masking, eight bytes at a time.

/// XORs `data` with the 4-byte `mask`, starting `offset` bytes into the mask cycle; returns the
/// offset for the byte after `data`. Masking twice with the same mask and offset restores the data.
#[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub))]
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) -> usize {
    let mut key = mask;
    key.rotate_left(offset % 4);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let (chunks, rest) = data.as_chunks_mut::<8>();
    for chunk in chunks {
        *chunk = (u64::from_ne_bytes(*chunk) ^ wide).to_ne_bytes();
    }
    for (i, byte) in rest.iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
    (offset + data.len()) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
