//! Redis glob patterns, matched exactly as the server's `SCAN MATCH` does
//! (`*`, `?`, `[abc]`, `[^a-z]`, `\` escapes, on bytes), so a TTL rule
//! applies to precisely the keys its pattern captured.

/// Whether `key` matches the Redis glob `pattern`.
pub fn matches(pattern: &[u8], key: &[u8]) -> bool {
    let (mut p, mut k) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after it, key index).
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, k));
                    continue;
                }
                b'?' => {
                    p += 1;
                    k += 1;
                    continue;
                }
                b'[' => {
                    let (hit, next) = class(pattern, p, key[k]);
                    if hit {
                        p = next;
                        k += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == key[k] => {
                    p += 2;
                    k += 1;
                    continue;
                }
                b'\\' if p + 1 < pattern.len() => {}
                c if c == key[k] => {
                    p += 1;
                    k += 1;
                    continue;
                }
                _ => {}
            }
        }
        // Mismatch: let the last `*` swallow one more byte, or fail.
        match star {
            Some((sp, sk)) => {
                star = Some((sp, sk + 1));
                p = sp;
                k = sk + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches one byte against the class starting at `pattern[start] == b'['`;
/// returns whether it matched and where the pattern goes on. An unclosed
/// class runs to the end of the pattern, as in Redis.
fn class(pattern: &[u8], start: usize, c: u8) -> (bool, usize) {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut hit = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            hit |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (a, b) = (
                pattern[i].min(pattern[i + 2]),
                pattern[i].max(pattern[i + 2]),
            );
            hit |= (a..=b).contains(&c);
            i += 3;
        } else {
            hit |= pattern[i] == c;
            i += 1;
        }
    }
    let next = (i + 1).min(pattern.len());
    (hit != negate, next)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn follows_redis_glob_rules() {
        let m = |p: &str, k: &str| matches(p.as_bytes(), k.as_bytes());
        assert!(m("agent:*", "agent:7"));
        assert!(m("agent:*", "agent:"));
        assert!(!m("agent:*", "agents:7"));
        assert!(m("task:pending:*", "task:pending:a:b"));
        assert!(!m("task:pending:*", "task:done:1"));
        assert!(m("s?ssion:*", "session:x"));
        assert!(m("*", ""));
        assert!(m("a*b*c", "a-x-b-y-c"));
        assert!(!m("a*b*c", "a-x-b-y"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-c]llo", "hbllo"));
        assert!(!m("h[a-c]llo", "hdllo"));
        assert!(m("literal\\*", "literal*"));
        assert!(!m("literal\\*", "literalx"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exactly"));
    }
}
