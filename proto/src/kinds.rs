//! Names of the contract's job kinds, derived from the `JobKind` enum: the
//! lowercase name without its prefix ("backup"), as schedules, job records
//! and metric labels write it. The list of kinds lives only in the proto.

use crate::v1::JobKind;
use std::sync::LazyLock;

const PREFIX: &str = "JOB_KIND_";

/// Every kind with its name (UNSPECIFIED left out).
static NAMES: LazyLock<Vec<(JobKind, &'static str)>> = LazyLock::new(|| {
    (1..=i32::from(u8::MAX))
        .filter_map(|n| JobKind::try_from(n).ok())
        .map(|k| {
            let name = k.as_str_name().trim_start_matches(PREFIX).to_lowercase();
            (k, &*Box::leak(name.into_boxed_str()))
        })
        .collect()
});

/// The kind's name ("backup"); "unspecified" for none.
pub fn name(kind: JobKind) -> &'static str {
    NAMES
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, n)| *n)
        .unwrap_or("unspecified")
}

/// The kind a name stands for.
pub fn parse(name: &str) -> Option<JobKind> {
    NAMES.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
}

/// Every kind's name, for error messages.
pub fn names() -> Vec<&'static str> {
    NAMES.iter().map(|(_, n)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_enum_and_read_back() {
        assert_eq!(name(JobKind::Backup), "backup");
        assert_eq!(parse("retention"), Some(JobKind::Retention));
        assert_eq!(parse("nonsense"), None);
        assert!(names().contains(&"verify"));
        assert!(!names().contains(&"unspecified"));
    }
}
