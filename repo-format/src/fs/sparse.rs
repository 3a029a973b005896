//! Sparse files: reading one for backup without reading its holes ([`HoleSkippingReader`],
//! which asks the file system where data is with `SEEK_DATA`/`SEEK_HOLE` and produces the holes'
//! zeros from memory), and writing one on restore with holes where the content is zeros
//! ([`SparseWriter`], which skips all-zero blocks and sets the length at the end).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};

/// Whether a file's allocated blocks cover less than its size: it has holes.
pub fn has_holes(meta: &std::fs::Metadata) -> bool {
    meta.is_file() && meta.blocks().saturating_mul(512) < meta.len()
}

/// Reads a file from its start, the data regions from disk and the holes as zeros made in
/// memory. Reads stop at the length the file had when the reader was made (as a plain read
/// would at end of file); a file that changes meanwhile is caught by the caller's checks.
pub struct HoleSkippingReader<'f> {
    file: &'f File,
    pos: u64,
    len: u64,
    /// The data region `pos` is in (`pos..data_end`), or `None` when not yet known.
    data_end: Option<u64>,
    /// The hole `pos` is in ends here (exclusive).
    hole_end: u64,
}

impl<'f> HoleSkippingReader<'f> {
    pub fn new(file: &'f File, len: u64) -> Self {
        HoleSkippingReader {
            file,
            pos: 0,
            len,
            data_end: None,
            hole_end: 0,
        }
    }

    /// Finds the region at `pos`: data up to `data_end`, or a hole up to `hole_end`.
    fn locate(&mut self) -> io::Result<()> {
        use nix::unistd::{lseek, Whence};
        let at = self.pos as i64;
        match lseek(self.file, at, Whence::SeekData) {
            Ok(data) if data as u64 > self.pos => {
                self.hole_end = (data as u64).min(self.len);
                self.data_end = None;
            }
            Ok(_) => {
                let hole = lseek(self.file, at, Whence::SeekHole)
                    .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
                self.data_end = Some((hole as u64).min(self.len));
            }
            // No data after `pos`: a hole to the end.
            Err(nix::errno::Errno::ENXIO) => {
                self.hole_end = self.len;
                self.data_end = None;
            }
            Err(e) => return Err(io::Error::from_raw_os_error(e as i32)),
        }
        Ok(())
    }
}

impl Read for HoleSkippingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let in_data = matches!(self.data_end, Some(end) if self.pos < end);
        if !in_data && self.pos >= self.hole_end {
            self.locate()?;
        }
        let n = match self.data_end {
            Some(end) if self.pos < end => {
                let want = buf.len().min((end - self.pos) as usize);
                self.file.read_at(&mut buf[..want], self.pos)?
            }
            _ => {
                let want = buf.len().min((self.hole_end - self.pos) as usize);
                buf[..want].fill(0);
                want
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// Blocks of this size that are all zeros are left as holes.
const BLOCK: usize = 4096;

/// Writes a file's content from its start, leaving holes where whole aligned blocks are zeros;
/// [`SparseWriter::finish`] sets the length (a file ending in a hole).
pub struct SparseWriter<'f> {
    file: &'f File,
    pos: u64,
    /// Bytes not yet written, starting at `pos`; written a block at a time.
    pending: Vec<u8>,
}

impl<'f> SparseWriter<'f> {
    pub fn new(file: &'f File) -> Self {
        SparseWriter {
            file,
            pos: 0,
            pending: Vec::with_capacity(256 << 10),
        }
    }

    /// Writes the whole blocks of `pending` (all of it when `all`), skipping zero blocks.
    fn drain(&mut self, all: bool) -> io::Result<()> {
        let whole = if all {
            self.pending.len()
        } else {
            self.pending.len() / BLOCK * BLOCK
        };
        let mut start = 0;
        while start < whole {
            let end = (start + BLOCK).min(whole);
            let block = &self.pending[start..end];
            if block.iter().any(|&b| b != 0) {
                self.file.write_all_at(block, self.pos + start as u64)?;
            }
            start = end;
        }
        self.pos += whole as u64;
        self.pending.drain(..whole);
        Ok(())
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= 256 << 10 {
            self.drain(false)?;
        }
        Ok(())
    }

    /// Writes what is left and sets the file's length.
    pub fn finish(mut self) -> io::Result<()> {
        self.drain(true)?;
        self.file.set_len(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn holes_are_skipped_on_reading_and_left_on_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let len = 64u64 << 20;
        {
            let f = File::create(&path).unwrap();
            f.set_len(len).unwrap();
            for at in [0u64, 20 << 20, len - 4096] {
                f.write_all_at(&[7u8; 4096], at).unwrap();
            }
        }
        let f = File::open(&path).unwrap();
        let meta = f.metadata().unwrap();
        assert!(has_holes(&meta));
        let mut read = Vec::new();
        HoleSkippingReader::new(&f, meta.len())
            .read_to_end(&mut read)
            .unwrap();
        assert_eq!(read, std::fs::read(&path).unwrap());

        let out_path = dir.path().join("out");
        let out = File::create(&out_path).unwrap();
        let mut w = SparseWriter::new(&out);
        for piece in read.chunks(100_000) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap();
        drop(out);
        assert_eq!(std::fs::read(&out_path).unwrap(), read);
        let written = std::fs::metadata(&out_path).unwrap();
        assert!(
            written.blocks() * 512 < 1 << 20,
            "{} blocks",
            written.blocks()
        );
        // A file without holes reads the same through it.
        let mut plain = File::create(dir.path().join("plain")).unwrap();
        plain.write_all(b"no holes here").unwrap();
        let f = File::open(dir.path().join("plain")).unwrap();
        let mut back = Vec::new();
        HoleSkippingReader::new(&f, 13)
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, b"no holes here");
    }
}
