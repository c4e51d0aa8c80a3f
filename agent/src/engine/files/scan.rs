//! A quick metadata-only walk that counts files and bytes ahead of the
//! backup, so the progress bar can show an ETA. It never reads content.

use super::excludes::Excludes;
use crate::engine::progress::Progress;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Starts the scan on its own thread.
pub fn spawn(paths: Vec<PathBuf>, excludes: Excludes, progress: Arc<Progress>) {
    let _ = std::thread::Builder::new()
        .name("scan".into())
        .spawn(move || {
            for p in &paths {
                scan(p, &excludes, &progress);
            }
            progress.totals_final.store(true, Ordering::Relaxed);
        });
}

fn scan(path: &Path, excludes: &Excludes, progress: &Progress) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_file() {
        Progress::add(&progress.files_total, 1);
        Progress::add(&progress.bytes_total, meta.len());
    } else if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            let child = entry.path();
            if !excludes.excludes(&child) {
                scan(&child, excludes, progress);
            }
        }
    }
}
