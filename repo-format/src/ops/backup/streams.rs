//! Backup stage 2 for stream-like sources: standard input, a command's output and PostgreSQL
//! dumps, each stored as one file of the snapshot (with synthetic parent directories). A stream
//! that cannot be read, a command that exits non-zero or a dump that fails fails the whole
//! backup: a snapshot never holds a partial dump.

use super::chunk::{Chunking, StreamError};
use super::plan::StreamPlan;
use super::pool::{PendingContent, PendingNode};
use super::{Run, SourceInput, StreamSource};
use crate::error::{Error, Result};
use crate::format::snapshot::{PostgresRecord, SourceRecord, StreamRecord};
use crate::format::tree::{encode_name, Node, NodeKind};
use crate::sources::child::Running;
use crate::sources::postgres::{DumpFormat, PgSource, SnapshotSession, TocCheck};
use crate::sources::stream::{finish_sha256, DumpTee};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

impl Run<'_, '_> {
    /// One stream-like source: its file node (with synthetic parent directories) and, for a
    /// named source, its record.
    pub(super) fn backup_stream_source(
        &mut self,
        plan: StreamPlan,
        time: &jiff::Zoned,
    ) -> Result<(PendingNode, Option<SourceRecord>)> {
        let started = Instant::now();
        let (content, size, kind, stream_record, postgres) = match plan.input {
            SourceInput::Stream {
                stream,
                dump_chunking,
                ..
            } => {
                // Unnamed streams (`--stdin-name`) are chunked by what they turn out to be.
                let chunking = if dump_chunking {
                    Chunking::Dump
                } else {
                    Chunking::ByContent
                };
                let label = plan.tree_path.display().to_string();
                let (content, facts, kind) = match stream {
                    StreamSource::Reader(reader) => {
                        let (tee, facts, _) = DumpTee::new(reader, None);
                        let content = match self.chunk_stream(tee, chunking, &label) {
                            Ok(r) => r,
                            Err(StreamError::Read(e)) => {
                                return Err(Error::io("reading", "standard input", e))
                            }
                            Err(StreamError::Fatal(e)) => return Err(e),
                        };
                        (content, facts, "stdin")
                    }
                    StreamSource::Command { program, args } => {
                        let display = std::iter::once(program.as_str())
                            .chain(args.iter().map(String::as_str))
                            .collect::<Vec<_>>()
                            .join(" ");
                        let mut command = crate::sources::child::command(&program);
                        command.args(&args);
                        let mut facts = None;
                        let content = self.run_command(command, display, chunking, |out| {
                            let (tee, f, _) = DumpTee::new(out, None);
                            facts = Some(f);
                            Box::new(tee)
                        })?;
                        let facts = facts.ok_or(Error::Stopped)?;
                        (content, facts, "command")
                    }
                };
                let (bytes, sha256) = finish_sha256(&facts);
                let (content, size) = content;
                let record = StreamRecord {
                    bytes,
                    sha256,
                    duration_seconds: started.elapsed().as_secs_f64(),
                };
                (content, size, kind, record, None)
            }
            SourceInput::Postgres(pg) => {
                let (content, size, record, pg_record) = self.backup_postgres(&pg)?;
                (content, size, "postgres", record, Some(pg_record))
            }
            SourceInput::Path { .. } => {
                return Err(Error::internal(
                    "a path source cannot be stored as a stream",
                ))
            }
        };
        if size == 0 {
            return Err(Error::InvalidInput(format!(
                "the stream for {} delivered 0 bytes; refusing to save an empty backup \
                 (a failed dump piped into coffer looks like this: use --stdin-from-command)",
                plan.tree_path.display()
            )));
        }
        let node = self.stream_node(&plan.tree_path, content, size, time)?;
        let record = plan.name.map(|name| SourceRecord {
            name,
            kind: kind.to_string(),
            tree_path: plan.tree_path.to_string_lossy().into_owned(),
            origin: None,
            stream: Some(stream_record),
            postgres,
        });
        Ok((node, record))
    }

    /// A PostgreSQL dump: the exporting transaction, `pg_dump --snapshot` streamed into the
    /// chunker, `pg_restore --list` reading the head of the same stream.
    fn backup_postgres(
        &mut self,
        pg: &PgSource,
    ) -> Result<(PendingContent, u64, StreamRecord, PostgresRecord)> {
        let started = Instant::now();
        let mut session = SnapshotSession::begin(pg)?;
        let server_version = std::mem::take(&mut session.server_version);
        let tables = std::mem::take(&mut session.tables);
        let roles = std::mem::take(&mut session.roles);
        let args = pg.dump_arguments(&session.snapshot_id);
        let display = pg.display("pg_dump", &args);
        let mut command = pg.command("pg_dump");
        command.args(&args);
        let toc = match pg.format {
            DumpFormat::Custom => Some(TocCheck::start(pg)?),
            DumpFormat::Plain => None,
        };
        let mut shared = None;
        let chunking = Chunking::Dump;
        let (content, size) = self.run_command(command, display, chunking, |out| {
            let (tee, facts, toc_out) = DumpTee::new(out, toc);
            shared = Some((facts, toc_out));
            Box::new(tee)
        })?;
        let (facts, toc_out) = shared.ok_or(Error::Stopped)?;
        // The dump is complete; the transaction may end.
        session.finish()?;
        let toc = toc_out.lock().ok().and_then(|mut t| t.take());
        let toc_entries = match toc {
            Some(t) => t.finish()?,
            None => 0,
        };
        let (bytes, sha256) = finish_sha256(&facts);
        let record = StreamRecord {
            bytes,
            sha256,
            duration_seconds: started.elapsed().as_secs_f64(),
        };
        let pg_record = PostgresRecord {
            database: pg.database.clone(),
            server_version,
            format: pg.format.as_str().to_string(),
            toc_entries,
            tables,
            roles: Some(roles),
            role_passwords: pg.role_passwords,
        };
        Ok((content, size, record, pg_record))
    }

    /// The file node of a stream and its synthetic parent directories, as the top-level node.
    pub(super) fn stream_node(
        &mut self,
        name: &Path,
        content: PendingContent,
        size: u64,
        time: &jiff::Zoned,
    ) -> Result<PendingNode> {
        let mtime_ns = i64::try_from(time.timestamp().as_nanosecond()).unwrap_or(0);
        let ids = std::fs::metadata("/proc/self")
            .map(|m| (m.uid(), m.gid()))
            .unwrap_or((0, 0));
        self.counts.files += 1;
        self.counts.total_bytes += size;
        self.progress.file_done();
        self.list(name, size, super::Change::New);
        let components: Vec<&std::ffi::OsStr> = name.iter().skip(1).collect();
        let synthetic = |n: &std::ffi::OsStr, kind: NodeKind, mode: u32| {
            let (name, name_bytes) = encode_name(n);
            Node {
                name,
                name_bytes,
                kind,
                mode,
                mtime_ns,
                ctime_ns: mtime_ns,
                inode: 0,
                uid: ids.0,
                gid: ids.1,
                size: 0,
                content: Vec::new(),
                subtree: None,
                target: None,
                target_bytes: None,
                device: None,
                links: None,
                device_id: None,
                sparse: false,
                xattrs: Vec::new(),
            }
        };
        let (last, dirs) = components
            .split_last()
            .ok_or_else(|| Error::InvalidInput("empty stream name".into()))?;
        let mut file = synthetic(last, NodeKind::File, 0o600);
        file.size = size;
        let mut pending = PendingNode {
            node: file,
            content: Some(content),
        };
        for dir in dirs.iter().rev() {
            let subtree = self.finish_tree(vec![pending])?;
            let mut node = synthetic(dir, NodeKind::Dir, 0o700);
            node.subtree = Some(subtree);
            self.counts.dirs += 1;
            pending = PendingNode {
                node,
                content: None,
            };
        }
        Ok(pending)
    }

    /// Runs a source command and chunks its standard output (passed through `wrap`, which may
    /// hash or tee it). A non-zero exit, a failed start or a failed read is an error carrying
    /// the command's stderr.
    fn run_command(
        &mut self,
        command: Command,
        display: String,
        chunking: Chunking,
        wrap: impl FnOnce(std::process::ChildStdout) -> Box<dyn Read + Send>,
    ) -> Result<(PendingContent, u64)> {
        let mut child = Running::spawn(
            command,
            Stdio::null(),
            Stdio::piped(),
            // Stopped (its whole process group) on cancel: a command that hangs must not hold an
            // interrupted backup hostage.
            Some(Arc::clone(&self.cancel_flag)),
        )
        .map_err(|e| {
            crate::sources::child::start_error(
                &display,
                e,
                " (not found: check the program name, the PATH or the command prefix)",
            )
        })?;
        let stdout = child.take_stdout().ok_or(Error::Stopped)?;
        let label = format!("the output of `{display}`");
        let chunked = self.chunk_stream(wrap(stdout), chunking, &label);
        if chunked.is_err() {
            child.stop();
        }
        let exit = child
            .wait()
            .map_err(|e| Error::io("waiting for", display.clone(), e))?;
        self.check_cancel()?;
        let result = match chunked {
            Ok(r) => r,
            Err(StreamError::Fatal(e)) => return Err(e),
            Err(StreamError::Read(e)) => {
                return Err(exit.failure(&display, format!("reading its output failed: {e}")))
            }
        };
        exit.check(&display)?;
        Ok(result)
    }
}
