//! WAL file names and positions: segments (`TTTTTTTTXXXXXXXXYYYYYYYY`),
//! timeline history files, backup history files and partial segments. Names
//! are parsed strictly because they become repository paths.

use seawall_common::{Error, ErrorKind, Result};
use std::fmt;

/// What a WAL file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalKind {
    /// A whole segment.
    Segment,
    /// The last, incomplete segment of a timeline (`.partial`).
    Partial,
    /// A backup history file (`.XXXXXXXX.backup`).
    BackupHistory,
    /// A timeline history file (`TTTTTTTT.history`).
    History,
}

/// A parsed WAL file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalName {
    /// Timeline.
    pub timeline: u32,
    /// Segment number (log * segments per log + seg); 0 for history files.
    pub log: u32,
    /// Segment within the log.
    pub seg: u32,
    /// Kind.
    pub kind: WalKind,
    /// The file name as PostgreSQL writes it.
    pub file: String,
}

fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

impl WalName {
    /// Parses a file name (no directories).
    pub fn parse(file: &str) -> Result<WalName> {
        let bad = || {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{file:?} is not a WAL file name (expected a 24-hex-digit segment, TTTTTTTT.history, .backup or .partial)"),
            )
        };
        let (kind, stem) = if let Some(tl) = file.strip_suffix(".history") {
            let timeline = hex8(tl).ok_or_else(bad)?;
            return Ok(WalName {
                timeline,
                log: 0,
                seg: 0,
                kind: WalKind::History,
                file: file.to_string(),
            });
        } else if let Some(s) = file.strip_suffix(".partial") {
            (WalKind::Partial, s)
        } else if let Some(s) = file.strip_suffix(".backup") {
            let (seg, offset) = s.split_once('.').ok_or_else(bad)?;
            hex8(offset).ok_or_else(bad)?;
            (WalKind::BackupHistory, seg)
        } else {
            (WalKind::Segment, file)
        };
        if stem.len() != 24 {
            return Err(bad());
        }
        Ok(WalName {
            timeline: hex8(&stem[0..8]).ok_or_else(bad)?,
            log: hex8(&stem[8..16]).ok_or_else(bad)?,
            seg: hex8(&stem[16..24]).ok_or_else(bad)?,
            kind,
            file: file.to_string(),
        })
    }

    /// The segment named by timeline and segment number.
    pub fn segment(timeline: u32, segno: u64, seg_size: u64) -> WalName {
        let per_log = segments_per_log(seg_size);
        let log = (segno / per_log) as u32;
        let seg = (segno % per_log) as u32;
        WalName {
            timeline,
            log,
            seg,
            kind: WalKind::Segment,
            file: format!("{timeline:08X}{log:08X}{seg:08X}"),
        }
    }

    /// The segment number across logs.
    pub fn segno(&self, seg_size: u64) -> u64 {
        u64::from(self.log) * segments_per_log(seg_size) + u64::from(self.seg)
    }

    /// The name under `wal/` in the repository: `<timeline>/<file>`.
    pub fn repo_name(&self) -> String {
        format!("{:08X}/{}", self.timeline, self.file)
    }

    /// Parses a repository name back.
    pub fn from_repo_name(name: &str) -> Option<WalName> {
        let (dir, file) = name.split_once('/')?;
        let parsed = WalName::parse(file).ok()?;
        (hex8(dir)? == parsed.timeline).then_some(parsed)
    }
}

impl fmt::Display for WalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)
    }
}

/// Segments in one "log" (4 GiB of WAL).
pub fn segments_per_log(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size.max(1)
}

/// Parses an LSN written as `X/Y`.
pub fn parse_lsn(s: &str) -> Result<u64> {
    let (hi, lo) = s.trim().split_once('/').ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("{s:?} is not an LSN (expected the form 16/B374D848)"),
        )
    })?;
    let part = |p: &str| {
        u32::from_str_radix(p, 16).map_err(|_| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{s:?} is not an LSN (expected the form 16/B374D848)"),
            )
        })
    };
    Ok((u64::from(part(hi)?) << 32) | u64::from(part(lo)?))
}

/// Writes an LSN as `X/Y`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The segment number holding `lsn`.
pub fn segno_of(lsn: u64, seg_size: u64) -> u64 {
    lsn / seg_size.max(1)
}

/// One line of a timeline history file: `parent` ended at `switch_lsn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineSwitch {
    /// The earlier timeline.
    pub parent: u32,
    /// Where it ended and the next began.
    pub switch_lsn: u64,
}

/// Parses a timeline history file.
pub fn parse_history(text: &str) -> Result<Vec<TimelineSwitch>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(tl), Some(lsn)) = (fields.next(), fields.next()) else {
            return Err(Error::corrupt(format!(
                "timeline history line {line:?} is malformed"
            )));
        };
        let parent = tl
            .parse::<u32>()
            .map_err(|_| Error::corrupt(format!("timeline history line {line:?} is malformed")))?;
        out.push(TimelineSwitch {
            parent,
            switch_lsn: parse_lsn(lsn)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 * 1024 * 1024;

    #[test]
    fn parses_every_kind() {
        let s = WalName::parse("000000020000000A000000FF").unwrap();
        assert_eq!(
            (s.timeline, s.log, s.seg, s.kind),
            (2, 10, 255, WalKind::Segment)
        );
        assert_eq!(s.segno(SEG), 10 * 256 + 255);
        assert_eq!(WalName::segment(2, 10 * 256 + 255, SEG), s);
        assert_eq!(s.repo_name(), "00000002/000000020000000A000000FF");
        assert_eq!(WalName::from_repo_name(&s.repo_name()), Some(s));
        assert_eq!(
            WalName::parse("00000003.history").unwrap().kind,
            WalKind::History
        );
        assert_eq!(
            WalName::parse("000000010000000000000002.00000028.backup")
                .unwrap()
                .kind,
            WalKind::BackupHistory
        );
        assert_eq!(
            WalName::parse("000000010000000000000002.partial")
                .unwrap()
                .kind,
            WalKind::Partial
        );
    }

    #[test]
    fn refuses_paths_and_junk() {
        for bad in [
            "../../etc/passwd",
            "00000001/x",
            "0000000100000000000000GG",
            "",
            "1.history",
        ] {
            assert!(WalName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            WalName::from_repo_name("00000002/000000010000000000000001"),
            None
        );
    }

    #[test]
    fn lsn_round_trip_and_history() {
        assert_eq!(parse_lsn("16/B374D848").unwrap(), 0x16_B374_D848);
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert!(parse_lsn("nope").is_err());
        assert_eq!(segno_of(0x0300_0028, SEG), 3);
        let h = parse_history("1\t0/3000100\tno recovery target specified\n\n2\t0/5000000\tx\n")
            .unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(
            h[1],
            TimelineSwitch {
                parent: 2,
                switch_lsn: 0x500_0000
            }
        );
    }
}
