//! `Engine::export_snapshot` on the caller's thread: a snapshot taken on request (the
//! worker answers with its durable file, opened), streamed into an export file
//! (`export_file`). The group goes on meanwhile: the snapshot is taken like any other,
//! and the copy runs on the caller's thread, never on the worker or apply thread.
//!
//! Owns that sequence only. Never takes the snapshot itself (`snap_request`) and never
//! defines the format (`export_file`).

use std::path::Path;

use super::snapshot_waiters::TakenSnapshot;
use super::{export_file, snapfile, Runtime};
use crate::api::{ExportError, ExportedSnapshot, SnapshotError};

impl Runtime {
    /// Takes a snapshot of `group` now and writes it to `path` as an export file.
    pub(crate) fn export_snapshot(&self, group: u64, path: &Path) -> Result<ExportedSnapshot, ExportError> {
        let TakenSnapshot { meta, file } = self.take_snapshot(group)?;
        let io = |source| ExportError::Io { path: path.to_path_buf(), source };
        let (file_meta, len, mut data) = snapfile::read_file_len(file, meta.index).map_err(io)?;
        if file_meta != meta {
            return Err(SnapshotError::Failed("the snapshot file holds other metadata".into()).into());
        }
        let checksum = export_file::write(path, group, &meta, len, &mut data).map_err(io)?;
        tracing::info!(group, index = meta.index, bytes = len, path = %path.display(), "snapshot exported");
        Ok(ExportedSnapshot {
            group,
            index: meta.index,
            term: meta.term,
            conf: meta.conf,
            bytes: len,
            checksum,
        })
    }
}
