//! Writing large new files around the page cache.
//!
//! Packs are flushed to disk as soon as they are written (storage.md: durable writes), and a
//! restored file is written once and not read back, so copying their bytes into the page cache
//! first buys nothing: on Linux a [`DirectWriter`] writes them with `O_DIRECT`, from aligned
//! buffers that are reused, straight to the device. This also keeps a backup from pushing the
//! server's own working set out of the page cache. On this project's benchmark VM a buffered
//! write of a new 400 MB file cost 1.8 s of kernel time and a direct one 0.11 s
//! (docs/benchmarks.md).
//!
//! A direct write returns when the device has the data, so full segments are written by a
//! helper thread while the caller fills the next one (two buffers, one write in flight): a
//! large restored file is written at the speed of whichever is slower, the device or the
//! decryption, not at the sum of both.
//!
//! Direct I/O is an optimisation, never a requirement: where the file system refuses it
//! (some FUSE and network file systems) or refuses an aligned write, the writer switches the
//! file back to ordinary writes and carries on from the same offset. The last, partial block
//! is always written the ordinary way, so the file has exactly the bytes given.

use crossbeam_channel::{bounded, Receiver, Sender};
use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Files smaller than this are not worth a direct write (their bytes would mostly be the
/// ordinarily written last block anyway).
pub const WORTH_IT: usize = 256 * 1024;
/// Bytes per direct write (a multiple of every device's logical block size).
const SEGMENT: usize = 2 << 20;
/// Alignment of the buffer, file offsets and lengths of direct writes.
const ALIGN: usize = 4096;

/// An aligned buffer of `SEGMENT` bytes (inside a slightly larger allocation).
struct Segment {
    buf: Vec<u8>,
    start: usize,
}

impl Segment {
    fn new() -> Segment {
        let buf = vec![0u8; SEGMENT + ALIGN];
        let start = (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN;
        Segment { buf, start }
    }

    fn bytes(&self, len: usize) -> &[u8] {
        &self.buf[self.start..self.start + len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + SEGMENT]
    }
}

thread_local! {
    /// Buffers kept between files (at most two per thread): fresh pages cost more than a copy.
    static SPARE: RefCell<Vec<Segment>> = const { RefCell::new(Vec::new()) };
}

fn take_segment() -> Segment {
    SPARE
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_else(Segment::new)
}

fn give_back(segment: Segment) {
    SPARE.with(|s| {
        let mut spare = s.borrow_mut();
        if spare.len() < 2 {
            spare.push(segment);
        }
    });
}

/// A full segment to write: the buffer, its length and its offset in the file.
type Job = (Segment, usize, u64);

/// The helper thread writing full segments directly, one at a time.
struct Helper {
    jobs: Option<Sender<Job>>,
    done: Receiver<(Job, io::Result<()>)>,
    in_flight: bool,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Helper {
    /// Starts a helper writing through its own descriptor of `file` (same open file, so the
    /// same `O_DIRECT` flag and offsets).
    fn start(file: &File) -> Option<Helper> {
        let file = file.try_clone().ok()?;
        let (jobs, rx) = bounded::<Job>(1);
        let (tx, done) = bounded(1);
        let handle = std::thread::Builder::new()
            .name("coffer-direct".into())
            .spawn(move || {
                for job in rx {
                    let result = file.write_all_at(job.0.bytes(job.1), job.2);
                    if tx.send((job, result)).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(Helper {
            jobs: Some(jobs),
            done,
            in_flight: false,
            handle: Some(handle),
        })
    }

    /// The write in flight, once it is done (`None` if there is none). A helper that stopped
    /// without answering took a segment with it: that is an error, never a silent hole.
    fn wait(&mut self) -> io::Result<Option<(Job, io::Result<()>)>> {
        if !self.in_flight {
            return Ok(None);
        }
        self.in_flight = false;
        self.done.recv().map(Some).map_err(|_| {
            io::Error::other("the direct-write helper thread stopped before finishing a write")
        })
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Writes a file from its start, in order, bypassing the page cache where it can (see the
/// module documentation). Call [`DirectWriter::finish`] to write the last bytes.
pub struct DirectWriter<'f> {
    file: &'f File,
    /// The segment being filled, and how far.
    current: Segment,
    filled: usize,
    /// Where `current` goes in the file.
    pos: u64,
    direct: bool,
    /// Bytes that went to the file by direct writes.
    direct_bytes: u64,
    helper: Option<Helper>,
}

impl<'f> DirectWriter<'f> {
    /// Writes `file` (opened for writing, new or truncated) from offset 0.
    pub fn new(file: &'f File) -> DirectWriter<'f> {
        Self::with_mode(file, true)
    }

    /// A writer whose buffer is one byte off alignment, so that every direct write is refused
    /// (EINVAL) and the fallback paths run.
    #[cfg(test)]
    fn misaligned(file: &'f File) -> DirectWriter<'f> {
        let mut w = Self::with_mode(file, true);
        let mut segment = Segment::new();
        segment.start += 1;
        w.current = segment;
        w
    }

    /// `try_direct: false` writes through the page cache throughout (what happens where the
    /// file system refuses direct I/O).
    fn with_mode(file: &'f File, try_direct: bool) -> DirectWriter<'f> {
        let direct = try_direct && set_direct(file, true).is_ok();
        DirectWriter {
            file,
            current: take_segment(),
            filled: 0,
            pos: 0,
            direct,
            direct_bytes: 0,
            helper: None,
        }
    }

    /// Appends `data`.
    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = (SEGMENT - self.filled).min(data.len());
            self.current.bytes_mut()[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == SEGMENT {
                self.send_segment()?;
            }
        }
        Ok(())
    }

    /// Hands the full segment to the helper (started on first use) and takes a free buffer;
    /// without a helper, or once direct writes are off, writes it here.
    fn send_segment(&mut self) -> io::Result<()> {
        if self.direct && self.helper.is_none() {
            self.helper = Helper::start(self.file);
        }
        let Some(helper) = self.helper.as_mut().filter(|_| self.direct) else {
            return self.write_here();
        };
        let free = match helper.wait()? {
            Some(finished) => self.settle(finished)?,
            None => take_segment(),
        };
        if !self.direct {
            // The write before was refused: this one goes the ordinary way too.
            give_back(free);
            return self.write_here();
        }
        let full = std::mem::replace(&mut self.current, free);
        let job = (full, self.filled, self.pos);
        let sent = match self.helper.as_mut() {
            Some(helper) => match helper.jobs.as_ref() {
                Some(jobs) => jobs.send(job).map_err(|e| e.into_inner()),
                None => Err(job),
            },
            None => Err(job),
        };
        match sent {
            Ok(()) => {
                if let Some(helper) = self.helper.as_mut() {
                    helper.in_flight = true;
                }
            }
            // The helper is gone (short of a panic it cannot be): write here instead.
            Err((segment, len, pos)) => {
                self.write_at_ordinarily(&segment, len, pos)?;
                give_back(segment);
            }
        }
        self.pos += self.filled as u64;
        self.filled = 0;
        Ok(())
    }

    /// Takes the result of a finished background write: returns its buffer, rewriting it the
    /// ordinary way (and turning direct writes off) if the write was refused.
    fn settle(
        &mut self,
        ((segment, len, pos), result): (Job, io::Result<()>),
    ) -> io::Result<Segment> {
        match result {
            Ok(()) => self.direct_bytes += len as u64,
            // Refused (alignment the device does not accept, or a file system that takes the
            // flag but not the write): write this and every later segment normally.
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                self.direct = false;
                set_direct(self.file, false)?;
                self.write_at_ordinarily(&segment, len, pos)?;
            }
            Err(e) => return Err(e),
        }
        Ok(segment)
    }

    fn write_at_ordinarily(&self, segment: &Segment, len: usize, pos: u64) -> io::Result<()> {
        self.file.write_all_at(segment.bytes(len), pos)
    }

    /// Writes `current[..filled]` at `pos` on this thread: directly while possible (an
    /// aligned length), else the ordinary way.
    fn write_here(&mut self) -> io::Result<()> {
        let len = self.filled;
        if self.direct && len % ALIGN != 0 {
            self.direct = false;
            set_direct(self.file, false)?;
        }
        if self.direct {
            match self.file.write_all_at(self.current.bytes(len), self.pos) {
                Ok(()) => self.direct_bytes += len as u64,
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    self.direct = false;
                    set_direct(self.file, false)?;
                    self.write_at_ordinarily(&self.current, len, self.pos)?;
                }
                Err(e) => return Err(e),
            }
        } else {
            self.write_at_ordinarily(&self.current, len, self.pos)?;
        }
        self.pos += len as u64;
        self.filled = 0;
        Ok(())
    }

    /// Writes what is left: the aligned part directly, the last partial block normally, and
    /// leaves the file in ordinary mode.
    pub fn finish(self) -> io::Result<()> {
        self.finish_counted().map(|_| ())
    }

    /// [`Self::finish`], also saying how many bytes were written directly.
    fn finish_counted(mut self) -> io::Result<u64> {
        let finished = match self.helper.as_mut() {
            Some(helper) => helper.wait()?,
            None => None,
        };
        if let Some(finished) = finished {
            let segment = self.settle(finished)?;
            give_back(segment);
        }
        self.helper = None;
        let aligned = self.filled - self.filled % ALIGN;
        if self.direct && aligned > 0 {
            let rest = self.filled - aligned;
            self.filled = aligned;
            self.write_here()?;
            // Move the tail to the start of the buffer.
            let start = self.current.start;
            self.current
                .buf
                .copy_within(start + aligned..start + aligned + rest, start);
            self.filled = rest;
        }
        if self.direct {
            self.direct = false;
            set_direct(self.file, false)?;
        }
        if self.filled > 0 {
            self.write_here()?;
        }
        give_back(std::mem::replace(
            &mut self.current,
            Segment {
                buf: Vec::new(),
                start: 0,
            },
        ));
        Ok(self.direct_bytes)
    }
}

thread_local! {
    /// The buffer direct reads land in, kept between reads (fresh pages cost more than the
    /// read): aligned inside a slightly larger allocation.
    static READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Reads `len` bytes from `offset` of `file`, which was opened with `O_DIRECT`, into this
/// thread's reused aligned buffer (the aligned blocks around the range are read) and hands them
/// to `f`: fewer bytes than `len` if the file ends first. The device writes straight into the
/// buffer, so nothing is copied out of the page cache and no page-cache pages are allocated.
/// An error (`EINVAL` where the file system refuses direct reads; any other I/O error; a read
/// from inside `f`) leaves the caller to read the ordinary way.
pub fn read_direct<R>(
    file: &File,
    offset: u64,
    len: usize,
    f: impl FnOnce(&[u8]) -> R,
) -> io::Result<R> {
    let start = offset - offset % ALIGN as u64;
    let skip = (offset - start) as usize;
    let span = (skip + len).div_ceil(ALIGN) * ALIGN;
    READ_BUFFER.with(|cell| {
        let mut buf = cell
            .try_borrow_mut()
            .map_err(|_| io::Error::from(io::ErrorKind::WouldBlock))?;
        if buf.len() < span + ALIGN {
            buf.resize(span + ALIGN, 0);
        }
        let base = (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN;
        let blocks = &mut buf[base..base + span];
        let mut done = 0;
        while done < span {
            match file.read_at(&mut blocks[done..], start + done as u64) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    // Only the end of the file makes a direct read stop short of a block.
                    if n % ALIGN != 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let have = done.saturating_sub(skip).min(len);
        Ok(f(&blocks[skip..skip + have]))
    })
}

/// Opens `path` for direct reads (`O_DIRECT`); elsewhere than Linux, `Unsupported`.
pub fn open_for_direct_reads(path: &std::path::Path) -> io::Result<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECT)
            .open(path)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// Turns `O_DIRECT` on or off for an open file.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(file, FcntlArg::F_GETFL).map_err(io::Error::from)?);
    let wanted = if on {
        flags | OFlag::O_DIRECT
    } else {
        flags & !OFlag::O_DIRECT
    };
    fcntl(file, FcntlArg::F_SETFL(wanted)).map_err(io::Error::from)?;
    Ok(())
}

/// Elsewhere files are always written through the page cache.
#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, on: bool) -> io::Result<()> {
    if on {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `pieces` (lengths) to a new file in `dir`; returns the bytes written directly, the
    /// file's content and the content expected.
    fn write_and_read(
        dir: &std::path::Path,
        pieces: &[usize],
        try_direct: bool,
    ) -> (u64, Vec<u8>, Vec<u8>) {
        let path = dir.join(format!("f{}-{try_direct}", pieces.iter().sum::<usize>()));
        let mut expected = Vec::new();
        let file = File::create(&path).unwrap();
        let mut w = DirectWriter::with_mode(&file, try_direct);
        for (i, &n) in pieces.iter().enumerate() {
            let piece: Vec<u8> = (0..n).map(|j| (i * 31 + j * 7) as u8).collect();
            w.write_all(&piece).unwrap();
            expected.extend_from_slice(&piece);
        }
        let direct_bytes = w.finish_counted().unwrap();
        file.sync_all().unwrap();
        drop(file);
        (direct_bytes, std::fs::read(&path).unwrap(), expected)
    }

    const SIZES: &[&[usize]] = &[
        &[],
        &[1],
        &[4095],
        &[4096],
        &[4097],
        &[SEGMENT],
        &[SEGMENT + 1],
        &[SEGMENT - 1, 2],
        &[3 * SEGMENT + 12345],
        &[100, 5000, SEGMENT, 17, 2 * SEGMENT + 4096, 1],
    ];

    /// Whether `dir` is on a file system known to take direct writes.
    fn takes_direct_io(dir: &std::path::Path) -> bool {
        use nix::sys::statfs::{statfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC};
        statfs(dir).is_ok_and(|s| {
            [EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC].contains(&s.filesystem_type())
        })
    }

    #[test]
    fn writes_exactly_the_bytes_given() {
        // Next to the sources: a disk file system on any build machine.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let expect_direct = takes_direct_io(dir.path());
        for pieces in SIZES {
            let total: usize = pieces.iter().sum();
            let (direct, got, want) = write_and_read(dir.path(), pieces, true);
            assert_eq!(got.len(), want.len(), "{pieces:?}");
            assert!(got == want, "content differs for {pieces:?}");
            if expect_direct {
                // Everything but the last partial block bypasses the page cache.
                assert_eq!(direct, (total - total % ALIGN) as u64, "{pieces:?}");
            }
        }
    }

    #[test]
    fn writes_the_same_bytes_where_direct_io_is_refused() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        for pieces in SIZES {
            let (direct, got, want) = write_and_read(dir.path(), pieces, false);
            assert_eq!(direct, 0);
            assert!(got == want, "content differs for {pieces:?}");
        }
    }

    #[test]
    fn a_refused_direct_write_is_written_again_the_ordinary_way() {
        // A misaligned buffer makes the kernel refuse each direct write with EINVAL: once on
        // this thread (a segment shorter than SEGMENT, at finish) and once on the helper
        // (a full segment); the file must still hold exactly the bytes given.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let expect_direct = takes_direct_io(dir.path());
        for total in [3 * ALIGN, 3 * SEGMENT + 12345] {
            let path = dir.path().join(format!("m{total}"));
            let file = File::create(&path).unwrap();
            let want: Vec<u8> = (0..total).map(|j| (j * 13 + 5) as u8).collect();
            let mut w = DirectWriter::misaligned(&file);
            w.write_all(&want).unwrap();
            let direct = w.finish_counted().unwrap();
            drop(file);
            assert!(
                std::fs::read(&path).unwrap() == want,
                "content differs at {total}"
            );
            if expect_direct {
                // The first segment was refused; the rest may go directly (fresh, aligned
                // buffers) only if direct writes stayed on, which they must not.
                assert_eq!(direct, 0, "{total}");
            }
        }
    }

    #[test]
    fn direct_reads_return_exactly_the_range_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack");
        let data: Vec<u8> = (0..3 * SEGMENT + 1234)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let Ok(file) = open_for_direct_reads(&path) else {
            return; // no direct I/O here: callers read the ordinary way
        };
        let n = data.len();
        for (offset, len) in [
            (0, 1),
            (0, ALIGN),
            (1, ALIGN),
            (ALIGN - 1, 2),
            (12_345, 300_000),
            (SEGMENT - 7, SEGMENT + 14),
            (n - 1234, 1234),
            (n - 5000, 4999),
            (0, n),
        ] {
            match read_direct(&file, offset as u64, len, |b| b.to_vec()) {
                Ok(got) => assert_eq!(got, &data[offset..offset + len], "{offset}+{len}"),
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => return,
                Err(e) => panic!("{offset}+{len}: {e}"),
            }
        }
        // Past the end: only what is there.
        let got = read_direct(&file, (n - 10) as u64, 100, |b| b.to_vec()).unwrap();
        assert_eq!(got, &data[n - 10..]);
        let got = read_direct(&file, n as u64 + 5000, 100, |b| b.len()).unwrap();
        assert_eq!(got, 0);
        // A read from inside `f` on the same thread is refused, not a panic.
        let nested = read_direct(&file, 0, 10, |_| read_direct(&file, 0, 10, |b| b.len()));
        assert_eq!(
            nested.unwrap().unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn the_spare_buffer_is_reused_by_the_next_file() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let a = File::create(dir.path().join("a")).unwrap();
        let w = DirectWriter::new(&a);
        let first = w.current.buf.as_ptr();
        w.finish().unwrap();
        let b = File::create(dir.path().join("b")).unwrap();
        let w = DirectWriter::new(&b);
        assert_eq!(w.current.buf.as_ptr(), first);
        assert_eq!(w.current.bytes(0).as_ptr() as usize % ALIGN, 0);
    }
}
