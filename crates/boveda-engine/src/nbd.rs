//! A client of the NBD protocol, enough to read a disk image that QEMU (or
//! `qemu-nbd`) exports on a UNIX socket, in user space (these machines have
//! no kernel NBD module): the fixed newstyle handshake, structured replies,
//! reads, and block status with metadata contexts, which give the
//! allocated ranges of a disk (`base:allocation`) and the ranges a dirty
//! bitmap marks (`qemu:dirty-bitmap:NAME`).
//!
//! The protocol: <https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The metadata context of allocated ranges.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// In `base:allocation`: the range reads as zeros and is not allocated.
pub const STATE_HOLE: u32 = 1;
/// In `base:allocation`: the range reads as zeros.
pub const STATE_ZERO: u32 = 2;
/// In a dirty bitmap's context: the range changed since the bitmap began.
pub const STATE_DIRTY: u32 = 1;

/// The dirty bitmap context of a bitmap exported with the disk.
pub fn dirty_bitmap_context(bitmap: &str) -> String {
    format!("qemu:dirty-bitmap:{bitmap}")
}

pub(crate) const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub(crate) const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub(crate) const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub(crate) const REQUEST_MAGIC: u32 = 0x2560_9513;
pub(crate) const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

pub(crate) const FLAG_FIXED_NEWSTYLE: u16 = 1;
pub(crate) const FLAG_NO_ZEROES: u16 = 2;

pub(crate) const OPT_GO: u32 = 7;
pub(crate) const OPT_STRUCTURED_REPLY: u32 = 8;
const OPT_SET_META_CONTEXT: u32 = 10;

pub(crate) const REP_ACK: u32 = 1;
pub(crate) const REP_INFO: u32 = 3;
const REP_META_CONTEXT: u32 = 4;
pub(crate) const REP_FLAG_ERROR: u32 = 1 << 31;
pub(crate) const INFO_EXPORT: u16 = 0;

pub(crate) const CMD_READ: u16 = 0;
pub(crate) const CMD_DISC: u16 = 2;
const CMD_BLOCK_STATUS: u16 = 7;

const REPLY_FLAG_DONE: u16 = 1;
const REPLY_TYPE_NONE: u16 = 0;
const REPLY_TYPE_OFFSET_DATA: u16 = 1;
const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;

/// The largest read asked for at once (QEMU serves up to 32 MiB).
const MAX_READ: usize = 8 << 20;
/// Replies larger than this are refused as damaged (a read's data, or a
/// block status of millions of extents).
const MAX_REPLY: u32 = 64 << 20;

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("NBD: {}", what.into()))
}

/// A range of an export and its state in one metadata context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    pub flags: u32,
}

/// A connection to one export.
pub struct NbdClient {
    stream: UnixStream,
    size: u64,
    /// Metadata contexts the server agreed to, with their ids.
    contexts: Vec<(u32, String)>,
    next_handle: u64,
}

impl NbdClient {
    /// Connects to `export` on the UNIX socket `socket`, asking for the
    /// metadata `contexts` (each must be granted).
    ///
    /// # Errors
    /// The socket's errors; `InvalidData` for a server that does not speak
    /// the protocol, refuses the export, or does not grant a context.
    pub fn connect(socket: &Path, export: &str, contexts: &[&str]) -> io::Result<Self> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| io::Error::new(e.kind(), format!("NBD socket {}: {e}", socket.display())))?;
        // a server that stops answering must not hold a backup forever
        stream.set_read_timeout(Some(Duration::from_secs(300)))?;
        let mut c = Self { stream, size: 0, contexts: Vec::new(), next_handle: 1 };
        c.handshake(export, contexts)?;
        Ok(c)
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn handshake(&mut self, export: &str, contexts: &[&str]) -> io::Result<()> {
        if self.u64()? != NBDMAGIC || self.u64()? != IHAVEOPT {
            return Err(bad("the server does not speak the newstyle protocol"));
        }
        let flags = self.u16()?;
        if flags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(bad("the server does not speak the fixed newstyle protocol"));
        }
        let ours = u32::from(FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES));
        self.stream.write_all(&ours.to_be_bytes())?;

        self.option(OPT_STRUCTURED_REPLY, &[])?;
        self.expect_ack(OPT_STRUCTURED_REPLY, |_, _| Ok(()))?;

        if !contexts.is_empty() {
            let mut data = Vec::new();
            data.extend_from_slice(&(export.len() as u32).to_be_bytes());
            data.extend_from_slice(export.as_bytes());
            data.extend_from_slice(&(contexts.len() as u32).to_be_bytes());
            for q in contexts {
                data.extend_from_slice(&(q.len() as u32).to_be_bytes());
                data.extend_from_slice(q.as_bytes());
            }
            self.option(OPT_SET_META_CONTEXT, &data)?;
            let mut granted = Vec::new();
            self.expect_ack(OPT_SET_META_CONTEXT, |kind, body| {
                if kind == REP_META_CONTEXT && body.len() >= 4 {
                    let id = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    granted.push((id, String::from_utf8_lossy(&body[4..]).into_owned()));
                }
                Ok(())
            })?;
            for q in contexts {
                if !granted.iter().any(|(_, name)| name == q) {
                    return Err(bad(format!("the server has no metadata context {q} for export {export:?}")));
                }
            }
            self.contexts = granted;
        }

        let mut data = Vec::new();
        data.extend_from_slice(&(export.len() as u32).to_be_bytes());
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes());
        self.option(OPT_GO, &data)?;
        let mut size = None;
        self.expect_ack(OPT_GO, |kind, body| {
            if kind == REP_INFO && body.len() >= 12 && u16::from_be_bytes([body[0], body[1]]) == INFO_EXPORT {
                let mut b = [0u8; 8];
                b.copy_from_slice(&body[2..10]);
                size = Some(u64::from_be_bytes(b));
            }
            Ok(())
        })?;
        self.size = size.ok_or_else(|| bad(format!("the server did not give the size of export {export:?}")))?;
        Ok(())
    }

    fn option(&mut self, option: u32, data: &[u8]) -> io::Result<()> {
        let mut msg = Vec::with_capacity(16 + data.len());
        msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
        msg.extend_from_slice(&option.to_be_bytes());
        msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
        msg.extend_from_slice(data);
        self.stream.write_all(&msg)
    }

    /// Reads option replies up to the final `ACK`, giving the others to
    /// `each`; an error reply fails with the server's message.
    fn expect_ack(&mut self, option: u32, mut each: impl FnMut(u32, &[u8]) -> io::Result<()>) -> io::Result<()> {
        loop {
            if self.u64()? != OPTION_REPLY_MAGIC {
                return Err(bad("a damaged option reply"));
            }
            let replied = self.u32()?;
            let kind = self.u32()?;
            let len = self.u32()?;
            if replied != option || len > MAX_REPLY {
                return Err(bad("a damaged option reply"));
            }
            let body = self.bytes(len as usize)?;
            if kind & REP_FLAG_ERROR != 0 {
                let message = String::from_utf8_lossy(&body);
                return Err(bad(format!(
                    "the server refused option {option} (error {}){}",
                    kind & !REP_FLAG_ERROR,
                    if message.is_empty() { String::new() } else { format!(": {message}") }
                )));
            }
            if kind == REP_ACK {
                return Ok(());
            }
            each(kind, &body)?;
        }
    }

    fn request(&mut self, command: u16, offset: u64, len: u32) -> io::Result<u64> {
        let handle = self.next_handle;
        self.next_handle += 1;
        let mut msg = [0u8; 28];
        msg[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        msg[6..8].copy_from_slice(&command.to_be_bytes());
        msg[8..16].copy_from_slice(&handle.to_be_bytes());
        msg[16..24].copy_from_slice(&offset.to_be_bytes());
        msg[24..28].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&msg)?;
        Ok(handle)
    }

    /// Reads the chunks of the reply to `handle`, giving each (type and
    /// payload) to `each`, until the last.
    fn replies(&mut self, handle: u64, mut each: impl FnMut(u16, &[u8]) -> io::Result<()>) -> io::Result<()> {
        loop {
            let magic = self.u32()?;
            if magic == SIMPLE_REPLY_MAGIC {
                let error = self.u32()?;
                if self.u64()? != handle {
                    return Err(bad("a reply to another request"));
                }
                if error != 0 {
                    return Err(bad(format!("the server failed the request (error {error})")));
                }
                // only errors come as simple replies once structured
                // replies are on
                return Err(bad("a simple reply where a structured one was due"));
            }
            if magic != STRUCTURED_REPLY_MAGIC {
                return Err(bad("a damaged reply"));
            }
            let flags = self.u16()?;
            let kind = self.u16()?;
            if self.u64()? != handle {
                return Err(bad("a reply to another request"));
            }
            let len = self.u32()?;
            if len > MAX_REPLY {
                return Err(bad("a reply of an impossible size"));
            }
            let payload = self.bytes(len as usize)?;
            if kind & REPLY_TYPE_ERROR_BIT != 0 {
                let code = payload.get(0..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                let message = payload.get(6..).map(|m| String::from_utf8_lossy(m).into_owned()).unwrap_or_default();
                return Err(io::Error::other(format!("NBD: the server failed the request (error {code}): {message}")));
            }
            if kind != REPLY_TYPE_NONE {
                each(kind, &payload)?;
            }
            if flags & REPLY_FLAG_DONE != 0 {
                return Ok(());
            }
        }
    }

    /// Fills `buf` with the export's bytes at `offset` (holes as zeros).
    ///
    /// # Errors
    /// The socket's errors; `InvalidData` for a damaged reply; the
    /// server's error for a failed read.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let len = (buf.len() - done).min(MAX_READ);
            let at = offset + done as u64;
            let window = &mut buf[done..done + len];
            let handle = self.request(CMD_READ, at, len as u32)?;
            let mut filled = 0u64;
            self.replies(handle, |kind, payload| {
                let Some(head) = payload.get(0..8) else { return Err(bad("a short read reply")) };
                let mut b = [0u8; 8];
                b.copy_from_slice(head);
                let chunk_at = u64::from_be_bytes(b);
                let (from, to_fill) = match kind {
                    REPLY_TYPE_OFFSET_DATA => (chunk_at, payload.len() as u64 - 8),
                    REPLY_TYPE_OFFSET_HOLE => {
                        let Some(l) = payload.get(8..12) else { return Err(bad("a short hole reply")) };
                        (chunk_at, u64::from(u32::from_be_bytes([l[0], l[1], l[2], l[3]])))
                    }
                    _ => return Err(bad(format!("an unexpected reply of type {kind} to a read"))),
                };
                let start = from.checked_sub(at).ok_or_else(|| bad("a read reply before its range"))? as usize;
                let end = start.checked_add(to_fill as usize).filter(|&e| e <= window.len());
                let end = end.ok_or_else(|| bad("a read reply past its range"))?;
                if kind == REPLY_TYPE_OFFSET_DATA {
                    window[start..end].copy_from_slice(&payload[8..]);
                } else {
                    window[start..end].fill(0);
                }
                filled += to_fill;
                Ok(())
            })?;
            if filled != len as u64 {
                return Err(bad(format!("a read of {len} bytes at {at} came back with {filled}")));
            }
            done += len;
        }
        Ok(())
    }

    /// The states of the whole export in the metadata context `context`,
    /// as consecutive extents from 0 to the export's size.
    ///
    /// # Errors
    /// `InvalidData` when `context` was not asked for at connection, or for
    /// a damaged reply; the socket's and the server's errors.
    pub fn block_status(&mut self, context: &str) -> io::Result<Vec<Extent>> {
        let id = self
            .contexts
            .iter()
            .find(|(_, name)| name == context)
            .map(|(id, _)| *id)
            .ok_or_else(|| bad(format!("metadata context {context} was not asked for")))?;
        let mut out: Vec<Extent> = Vec::new();
        let mut offset = 0;
        while offset < self.size {
            let len = (self.size - offset).min(u64::from(u32::MAX) & !0xfff_u64) as u32;
            let handle = self.request(CMD_BLOCK_STATUS, offset, len)?;
            let mut got = Vec::new();
            self.replies(handle, |kind, payload| {
                if kind != REPLY_TYPE_BLOCK_STATUS {
                    return Err(bad(format!("an unexpected reply of type {kind} to a block status")));
                }
                if payload.len() < 4 || (payload.len() - 4) % 8 != 0 {
                    return Err(bad("a damaged block status reply"));
                }
                if u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) != id {
                    return Ok(()); // another context's answer
                }
                for d in payload[4..].chunks_exact(8) {
                    let l = u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
                    got.push((l, u32::from_be_bytes([d[4], d[5], d[6], d[7]])));
                }
                Ok(())
            })?;
            if got.is_empty() || got.iter().any(|&(l, _)| l == 0) {
                return Err(bad(format!("no progress in the block status of {context} at {offset}")));
            }
            for (l, flags) in got {
                let l = l.min(self.size - offset);
                if l == 0 {
                    break;
                }
                match out.last_mut() {
                    Some(last) if last.flags == flags && last.offset + last.len == offset => last.len += l,
                    _ => out.push(Extent { offset, len: l, flags }),
                }
                offset += l;
            }
        }
        Ok(out)
    }

    fn bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.stream.read_exact(&mut b)?;
        Ok(b)
    }

    fn u16(&mut self) -> io::Result<u16> {
        let mut b = [0u8; 2];
        self.stream.read_exact(&mut b)?;
        Ok(u16::from_be_bytes(b))
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.stream.read_exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.stream.read_exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        // a polite end; the server copes with a closed socket too
        let _ = self.request(CMD_DISC, 0, 0);
    }
}
