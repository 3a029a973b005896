//! Backup stage 4, tree assembly: a directory's tree is stored once every node in it is
//! complete (its files' chunk ids back from the pool, its subdirectories' trees stored), bottom
//! up; the root tree joins the streams' nodes and the path sources'.

use super::plan::{PathPlan, StreamPlan};
use super::pool::PendingNode;
use super::walk::RootContent;
use super::Run;
use crate::error::Result;
use crate::format::compress::BlobClass;
use crate::format::id::BlobId;
use crate::format::snapshot::SourceRecord;
use crate::format::tree::Tree;
use std::path::PathBuf;

impl Run<'_, '_> {
    /// Stores one tree blob (on this thread: trees are small, and a directory's tree is
    /// needed before its parent's).
    fn store_tree(&mut self, tree: &Tree) -> Result<BlobId> {
        self.writer
            .store(&mut self.compressor, BlobClass::Tree, &tree.encode())
            .map(|(id, _)| id)
    }

    /// Waits for the content of `pending` (its files' chunk ids) and stores their tree.
    pub(super) fn finish_tree(&mut self, pending: Vec<PendingNode>) -> Result<BlobId> {
        let nodes = pending
            .into_iter()
            .map(PendingNode::resolve)
            .collect::<Result<Vec<_>>>()?;
        let mut tree = Tree { nodes };
        tree.sort();
        self.store_tree(&tree)
    }

    /// Every source into the root tree: streams first (a database is dumped before the files
    /// are read, so uploads referenced by the dump are in the snapshot), then the paths.
    pub(super) fn backup_sources(
        &mut self,
        paths: &[PathPlan],
        streams: Vec<StreamPlan>,
        parent: Option<&Tree>,
        time: &jiff::Zoned,
    ) -> Result<(BlobId, Vec<SourceRecord>)> {
        let mut records = Vec::new();
        let mut nodes = Vec::new();
        for plan in streams {
            let name = plan.name.clone();
            let started = std::time::Instant::now();
            let shown = plan.tree_path.clone();
            self.progress
                .set_current(name.as_deref().unwrap_or(&shown.display().to_string()));
            let (node, record) = match self.backup_stream_source(plan, time) {
                Ok(r) => r,
                // Unnamed streams (`--stdin-from-command`) keep the command's own message.
                Err(e) => {
                    return Err(match name {
                        Some(n) => e.in_source(&n),
                        None => e,
                    })
                }
            };
            tracing::info!(
                "stream source {shown:?} read in {:.2} s",
                started.elapsed().as_secs_f64()
            );
            nodes.push(node);
            records.extend(record);
        }
        if !paths.is_empty() {
            let absolute: Vec<PathBuf> = paths.iter().map(|p| p.absolute.clone()).collect();
            match self.backup_paths(&absolute, parent)? {
                RootContent::Whole(id) => return Ok((id, records)),
                RootContent::Nodes(n) => nodes.extend(n),
            }
        }
        Ok((self.finish_tree(nodes)?, records))
    }
}
