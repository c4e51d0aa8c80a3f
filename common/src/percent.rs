//! Percent-encoding for the credentials and names inside connection URLs
//! (PostgreSQL and Redis read the same RFC 3986 form) and for a token in
//! the status page's query string.

/// Encodes every byte outside RFC 3986's unreserved set.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Decodes `%XX` sequences; anything else, a stray `%` included, is kept.
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_survives_bad_escapes() {
        assert_eq!(decode(&encode("p@ss: wörd/%")), "p@ss: wörd/%");
        assert_eq!(decode("a%40b"), "a@b");
        // A `%` before a multi-byte character or at the end is kept, not a panic.
        assert_eq!(decode("%é"), "%é");
        assert_eq!(decode("x%4"), "x%4");
    }
}
