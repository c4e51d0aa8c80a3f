//! How results are shown: one-line errors, sizes and rates for people, JSON for machines.

use serde::Serialize;

/// An error chain as one line: the outermost message and any distinct causes.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ").replace('\n', " ")
}

/// Bytes as a person reads them.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Bytes per second as a person reads them.
pub fn rate(bytes: u64, secs: f64) -> String {
    format!("{}/s", size((bytes as f64 / secs.max(1e-6)) as u64))
}

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `text` with its control characters shown escaped (`\u{1b}`): what
/// agents, servers or hostile names put in a message cannot move the
/// cursor, rewrite the screen, set the terminal's title or reverse the
/// text's direction. Newlines and tabs stay.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if unsafe_char(c) {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// `println!` for lines holding what others supplied (an agent's error, a
/// server's message): control characters are escaped by [`printable`].
#[macro_export]
macro_rules! say {
    () => {
        println!()
    };
    ($($arg:tt)*) => {
        println!("{}", $crate::output::printable(&format!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escape_sequences_and_direction_overrides_are_shown_not_obeyed() {
        assert_eq!(printable("ok\tfine\n"), "ok\tfine\n");
        assert_eq!(
            printable("\u{1b}]0;pwned\u{7}\u{1b}[2Jlag"),
            "\\u{1b}]0;pwned\\u{7}\\u{1b}[2Jlag"
        );
        assert_eq!(printable("a\u{202e}b\u{9b}c"), "a\\u{202e}b\\u{9b}c");
    }
}
