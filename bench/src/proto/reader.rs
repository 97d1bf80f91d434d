//! A read buffer that frames are parsed from in place.

use std::io::{self, Read};

use super::{Event, ProtoError, Wire};

/// Bytes read from a socket and not yet parsed live in `buf[start..end]`.
/// A partial frame at the end is moved to the front when space runs short;
/// the buffer grows only for a frame larger than itself.
pub struct Reader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// Read when at least this much room is free at the end; else compact first.
const MIN_FREE: usize = 16 * 1024;

impl Reader {
    pub fn new(capacity: usize) -> Reader {
        Reader {
            buf: vec![0; capacity.max(2 * MIN_FREE)],
            start: 0,
            end: 0,
        }
    }

    /// One `read` call into the free space; returns its byte count (0 = EOF).
    pub fn read_from<R: Read>(&mut self, source: &mut R) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < MIN_FREE {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < MIN_FREE {
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
        }
        let n = source.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// The next complete event, or `None` when the buffer holds only part
    /// of one (or nothing).
    #[inline]
    pub fn next<W: Wire>(&mut self) -> Result<Option<Event<'_>>, ProtoError> {
        match W::parse(&self.buf[self.start..self.end])? {
            Some((event, used)) => {
                self.start += used;
                Ok(Some(event))
            }
            None => Ok(None),
        }
    }
}
