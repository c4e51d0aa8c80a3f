//! PostgreSQL WAL positions as text ("16/B374D848") and as byte offsets.

/// A WAL position as a byte offset; `None` when `text` is not one.
pub fn parse(text: &str) -> Option<i64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    i64::try_from((hi << 32) | lo).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn positions_read_as_byte_offsets() {
        assert_eq!(super::parse("0/3000060"), Some(0x300_0060));
        assert_eq!(
            super::parse("16/B374D848"),
            Some((0x16 << 32) | 0xB374_D848)
        );
        assert_eq!(super::parse("nonsense"), None);
        assert_eq!(super::parse("1/xyz"), None);
    }
}
