//! Redis's canaries: the key `seawall:canary:SERVICE`, "SEQ:MILLISECONDS".

use crate::stores::canary::Marker;
use seawall_common::{Error, ErrorKind, Result};

/// The Redis key of `service`'s marker.
pub fn key(service: &str) -> String {
    format!("seawall:canary:{service}")
}

fn redis_error(what: &str, e: redis::RedisError) -> Error {
    Error::new(ErrorKind::Unreachable, format!("{what}: {e}"))
}

/// Writes `marker` for `service` on a Redis master.
pub async fn write(
    con: &mut redis::aio::MultiplexedConnection,
    service: &str,
    marker: Marker,
) -> Result<()> {
    redis::cmd("SET")
        .arg(key(service))
        .arg(format!("{}:{}", marker.seq, marker.written_unix_ms))
        .query_async::<()>(con)
        .await
        .map_err(|e| redis_error("writing the canary", e))
}

/// The newest marker of `service` the server holds.
pub async fn read(
    con: &mut redis::aio::MultiplexedConnection,
    service: &str,
) -> Result<Option<Marker>> {
    let value: Option<String> = redis::cmd("GET")
        .arg(key(service))
        .query_async(con)
        .await
        .map_err(|e| redis_error("reading the canary", e))?;
    value.map(|v| parse_marker(&v)).transpose()
}

/// Reads "SEQ:MILLISECONDS".
pub fn parse_marker(value: &str) -> Result<Marker> {
    let bad = || {
        Error::new(
            ErrorKind::Corrupt,
            format!("the canary key holds {value:?}, not SEQ:MILLISECONDS: something else writes seawall:canary:*"),
        )
    };
    let (seq, ms) = value.split_once(':').ok_or_else(bad)?;
    Ok(Marker {
        seq: seq.parse().map_err(|_| bad())?,
        written_unix_ms: ms.parse().map_err(|_| bad())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_marker_reads_back_and_a_foreign_value_is_named() {
        let m = parse_marker("42:1700000000123").expect("marker");
        assert_eq!(m.seq, 42);
        assert_eq!(m.written_unix_ms, 1_700_000_000_123);
        let e = parse_marker("hello").expect_err("foreign");
        assert!(e.to_string().contains("something else writes"), "{e}");
    }
}
