//! The `keys` stream of an application-state snapshot: a header, one
//! record per key (name, absolute expiry in Unix milliseconds, the
//! server's `DUMP` payload), and a trailer with the record count, so a
//! stream cut short is told apart from a complete one. Integers are
//! big-endian. The DUMP payload carries its own RDB version and CRC-64,
//! which the target checks on `RESTORE`.

use seawall_common::{Error, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// First bytes of the stream: name and format version.
pub const MAGIC: &[u8] = b"SEAWALL-REDIS-KEYS 1\n";
const RECORD: u8 = b'K';
const TRAILER: u8 = b'E';
/// Redis refuses key names longer than this.
const MAX_KEY: u32 = 512 * 1024 * 1024;
/// No expiry.
const PERSISTENT: i64 = -1;

/// One captured key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key name (binary).
    pub key: Vec<u8>,
    /// When it expires, in Unix milliseconds of the source server's clock.
    pub expire_at_ms: Option<i64>,
    /// `DUMP` output.
    pub payload: Vec<u8>,
}

/// Writes the header, records and trailer.
pub struct RecordWriter<W> {
    out: W,
    count: u64,
}

impl<W: AsyncWrite + Unpin> RecordWriter<W> {
    /// Writes the header.
    pub async fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(MAGIC).await?;
        Ok(RecordWriter { out, count: 0 })
    }

    /// Writes one record.
    pub async fn write(&mut self, r: &KeyRecord) -> std::io::Result<()> {
        let mut head = Vec::with_capacity(1 + 4 + r.key.len() + 8 + 8);
        head.push(RECORD);
        head.extend_from_slice(&(r.key.len() as u32).to_be_bytes());
        head.extend_from_slice(&r.key);
        head.extend_from_slice(&r.expire_at_ms.unwrap_or(PERSISTENT).to_be_bytes());
        head.extend_from_slice(&(r.payload.len() as u64).to_be_bytes());
        self.out.write_all(&head).await?;
        self.out.write_all(&r.payload).await?;
        self.count += 1;
        Ok(())
    }

    /// Writes the trailer and closes the output.
    pub async fn finish(mut self) -> std::io::Result<u64> {
        self.out.write_all(&[TRAILER]).await?;
        self.out.write_all(&self.count.to_be_bytes()).await?;
        self.out.shutdown().await?;
        Ok(self.count)
    }
}

/// Reads records back, checking the header, the trailer and the count.
pub struct RecordReader<R> {
    input: R,
    count: u64,
    done: bool,
}

fn cut(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::corrupt("the keys stream ends in the middle of a record: the snapshot is damaged; run `seawall verify --read-data` and restore an older snapshot")
    } else {
        Error::corrupt(format!("reading the keys stream: {e}"))
    }
}

impl<R: AsyncRead + Unpin> RecordReader<R> {
    /// Reads and checks the header.
    pub async fn new(mut input: R) -> Result<Self> {
        let mut magic = vec![0u8; MAGIC.len()];
        input.read_exact(&mut magic).await.map_err(cut)?;
        if magic != MAGIC {
            return Err(Error::corrupt(
                "this stream is not a Seawall Redis keys stream (or a newer format version: use a newer seawall)",
            ));
        }
        Ok(RecordReader {
            input,
            count: 0,
            done: false,
        })
    }

    /// The next record, or None after a complete trailer.
    pub async fn next(&mut self) -> Result<Option<KeyRecord>> {
        if self.done {
            return Ok(None);
        }
        match self.input.read_u8().await.map_err(cut)? {
            RECORD => {}
            TRAILER => {
                let n = self.input.read_u64().await.map_err(cut)?;
                if n != self.count {
                    return Err(Error::corrupt(format!(
                        "the keys stream says it holds {n} keys but {} were read",
                        self.count
                    )));
                }
                self.done = true;
                return Ok(None);
            }
            other => {
                return Err(Error::corrupt(format!(
                    "unexpected byte {other:#04x} between records of the keys stream"
                )))
            }
        }
        let key_len = self.input.read_u32().await.map_err(cut)?;
        if key_len > MAX_KEY {
            return Err(Error::corrupt(format!(
                "a key name of {key_len} bytes in the keys stream: damaged"
            )));
        }
        let mut key = vec![0u8; key_len as usize];
        self.input.read_exact(&mut key).await.map_err(cut)?;
        let expire = self.input.read_i64().await.map_err(cut)?;
        let len = self.input.read_u64().await.map_err(cut)?;
        // Read through `take` so a damaged length cannot allocate it all up front.
        let mut payload = Vec::with_capacity(len.min(1 << 20) as usize);
        let got = (&mut self.input)
            .take(len)
            .read_to_end(&mut payload)
            .await
            .map_err(cut)?;
        if got as u64 != len {
            return Err(cut(std::io::ErrorKind::UnexpectedEof.into()));
        }
        self.count += 1;
        Ok(Some(KeyRecord {
            key,
            expire_at_ms: (expire != PERSISTENT).then_some(expire),
            payload,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<KeyRecord> {
        vec![
            KeyRecord {
                key: b"agent:1".to_vec(),
                expire_at_ms: None,
                payload: b"\x00\x03abc".to_vec(),
            },
            KeyRecord {
                key: vec![0xff, 0, 1],
                expire_at_ms: Some(1_800_000_000_000),
                payload: vec![7; 70_000],
            },
        ]
    }

    async fn encoded() -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = RecordWriter::new(&mut out).await.unwrap();
        for r in records() {
            w.write(&r).await.unwrap();
        }
        assert_eq!(w.finish().await.unwrap(), 2);
        out
    }

    #[tokio::test]
    async fn round_trips_and_detects_truncation() {
        let bytes = encoded().await;
        let mut r = RecordReader::new(&bytes[..]).await.unwrap();
        let mut got = Vec::new();
        while let Some(rec) = r.next().await.unwrap() {
            got.push(rec);
        }
        assert_eq!(got, records());

        // Every cut short of the full stream is an error, never a silent end.
        for cut_at in [MAGIC.len() + 3, bytes.len() - 30_000, bytes.len() - 1] {
            let short = &bytes[..cut_at];
            let mut r = RecordReader::new(short).await.unwrap();
            let mut err = None;
            loop {
                match r.next().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            assert!(
                err.is_some_and(|e| e.to_string().contains("damaged")),
                "cut at {cut_at} was not detected"
            );
        }
        assert!(RecordReader::new(&b"SEAWALL-OTHER"[..]).await.is_err());
    }
}
