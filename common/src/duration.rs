//! The one duration grammar of every config file and flag: a number with a
//! unit ("90s", "5m", "1h 30m", "30d"), or a bare whole number of seconds
//! ("30", or an integer in TOML). Before, three parsers disagreed on bare
//! numbers.

use std::time::Duration;

/// Parses a duration, or says what is wrong and how to write it.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("an empty duration: write it like \"30s\", \"5m\" or \"12h\"".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("{text:?} is not a duration ({e}): write it like \"30s\", \"5m\", \"12h\" or \"30d\" (a bare number is seconds)")
    })
}

/// Serde support: a duration field written as text or as whole seconds.
pub mod serde_text {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Secs(u64),
        Human(String),
    }

    /// Deserializes with [`super::parse`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Text::deserialize(d)? {
            Text::Secs(s) => Ok(Duration::from_secs(s)),
            Text::Human(t) => super::parse(&t).map_err(serde::de::Error::custom),
        }
    }

    /// An optional duration field.
    pub mod option {
        use serde::Deserializer;
        use std::time::Duration;

        /// Deserializes `Some` with [`super::super::parse`].
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds_read_alike_everywhere() {
        assert_eq!(parse("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("30d").unwrap(), Duration::from_secs(30 * 86400));
        let err = parse("soon").unwrap_err();
        assert!(err.contains("write it like"), "{err}");
        assert!(parse("").is_err());
        assert!(parse("-5").is_err());
    }

    #[test]
    fn config_files_take_text_or_an_integer() {
        #[derive(serde::Deserialize)]
        struct C {
            #[serde(with = "serde_text")]
            d: Duration,
        }
        let a: C = toml::from_str("d = 15").unwrap();
        let b: C = toml::from_str("d = \"15s\"").unwrap();
        assert_eq!(a.d, b.d);
        let e = toml::from_str::<C>("d = \"fortnight\"").err().unwrap();
        assert!(e.to_string().contains("write it like"), "{e}");
    }
}
