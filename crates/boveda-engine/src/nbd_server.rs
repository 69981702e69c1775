//! An NBD server that exports the disks of a recovery point read-only on a
//! UNIX socket ("instant restore"): a VM boots from a point at once, with
//! a qcow2 overlay over the export taking its writes, while each read
//! decrypts only the chunks it covers.
//!
//! It speaks the fixed newstyle handshake (`NBD_OPT_GO`, `NBD_OPT_INFO`,
//! `NBD_OPT_LIST`, `NBD_OPT_EXPORT_NAME`) and simple replies; writes are
//! refused with `EPERM`. The protocol:
//! <https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use boveda_vault::{ChunkId, ChunkIndex, NodeKind, Vault};

use crate::error::{EngineError, Result};
use crate::nbd::{
    CMD_DISC, CMD_READ, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, INFO_EXPORT, NBDMAGIC, OPT_GO,
    OPTION_REPLY_MAGIC, REP_ACK, REP_FLAG_ERROR, REP_INFO, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC,
};
use crate::point_reader::{ChunkCache, PointFile};

const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_LIST: u32 = 3;
const OPT_INFO: u32 = 6;
const REP_SERVER: u32 = 2;
const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
const INFO_BLOCK_SIZE: u16 = 3;

const CMD_WRITE: u16 = 1;
const CMD_FLUSH: u16 = 3;
const CMD_TRIM: u16 = 4;
const CMD_CACHE: u16 = 5;
const CMD_WRITE_ZEROES: u16 = 6;

const FLAG_HAS_FLAGS: u16 = 1;
const FLAG_READ_ONLY: u16 = 1 << 1;
const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
const TRANSMISSION_FLAGS: u16 = FLAG_HAS_FLAGS | FLAG_READ_ONLY | FLAG_CAN_MULTI_CONN;

const EPERM: u32 = 1;
const EIO: u32 = 5;
const EINVAL: u32 = 22;

/// The largest request served; clients learn it from the block size info.
const MAX_REQUEST: u32 = 32 << 20;
/// Options longer than this end the connection.
const MAX_OPTION: u32 = 64 << 10;
/// Clients served at once; more wait for one to leave.
const MAX_CLIENTS: usize = 16;

/// One disk of a point, exported under its name in the point (`disk`,
/// `vda`, ...).
struct Export {
    name: String,
    file: PointFile,
}

struct Server<'a> {
    vault: &'a Vault,
    index: &'a ChunkIndex,
    cache: ChunkCache,
    exports: Vec<Export>,
}

fn exports_of(vault: &Vault, index: &ChunkIndex, tree: &ChunkId, except: &[&str]) -> Result<Vec<Export>> {
    let root = vault.load_tree(index, tree)?;
    Ok(root
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::File)
        .map(|n| (String::from_utf8_lossy(&n.name).into_owned(), n))
        .filter(|(name, _)| !except.contains(&name.as_str()))
        .map(|(name, n)| Export { name, file: PointFile::new(n) })
        .collect())
}

/// Serves the disks of the point with root tree `tree` (all files of its
/// root but `except`) on the UNIX socket `socket` until `stop` is set;
/// `ready` is called once the socket accepts connections. The export
/// named `""` is the first disk. Returns the bytes of sealed chunks it
/// read from the store for its clients.
///
/// # Errors
/// `Io` when the socket cannot be made (its folder is missing, or another
/// process serves on it); the vault's errors reading the tree.
pub fn serve_point_disks(
    vault: &Vault,
    tree: &ChunkId,
    except: &[&str],
    socket: &Path,
    stop: &AtomicBool,
    ready: impl FnOnce(&[(String, u64)]),
) -> Result<u64> {
    let index = vault.load_index()?;
    let exports = exports_of(vault, &index, tree, except)?;
    let listener = bind(socket).map_err(|e| EngineError::io(socket, e))?;
    listener.set_nonblocking(true).map_err(|e| EngineError::io(socket, e))?;
    let server = Server { vault, index: &index, cache: ChunkCache::default(), exports };
    ready(&server.exports.iter().map(|e| (e.name.clone(), e.file.size())).collect::<Vec<_>>());
    let clients = AtomicUsize::new(0);
    let result = std::thread::scope(|scope| -> io::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            if clients.load(Ordering::Acquire) >= MAX_CLIENTS {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    clients.fetch_add(1, Ordering::AcqRel);
                    let (server, clients) = (&server, &clients);
                    scope.spawn(move || {
                        // a client that leaves or breaks the protocol ends only its own connection
                        let _ = server.serve_client(stream, stop);
                        clients.fetch_sub(1, Ordering::AcqRel);
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(50)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    let _ = std::fs::remove_file(socket);
    result.map_err(|e| EngineError::io(socket, e))?;
    Ok(server.cache.fetched())
}

/// Listens on `socket`, replacing a socket file nobody serves on any more.
fn bind(socket: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket"));
        }
        if UnixStream::connect(socket).is_ok() {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "another process serves on this socket"));
        }
        std::fs::remove_file(socket)?;
    }
    UnixListener::bind(socket)
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("NBD client: {what}"))
}

fn option_reply(w: &mut impl Write, option: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    w.write_all(&OPTION_REPLY_MAGIC.to_be_bytes())?;
    w.write_all(&option.to_be_bytes())?;
    w.write_all(&kind.to_be_bytes())?;
    w.write_all(&(data.len() as u32).to_be_bytes())?;
    w.write_all(data)?;
    w.flush()
}

fn simple_reply(w: &mut impl Write, handle: u64, error: u32, data: &[u8]) -> io::Result<()> {
    w.write_all(&SIMPLE_REPLY_MAGIC.to_be_bytes())?;
    w.write_all(&error.to_be_bytes())?;
    w.write_all(&handle.to_be_bytes())?;
    w.write_all(data)?;
    w.flush()
}

impl Server<'_> {
    fn find(&self, name: &str) -> Option<&Export> {
        if name.is_empty() { self.exports.first() } else { self.exports.iter().find(|e| e.name == name) }
    }

    fn serve_client(&self, stream: UnixStream, stop: &AtomicBool) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        // wakes up now and then to see `stop`
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut r = BufReader::new(StopAware { stream: stream.try_clone()?, stop });
        let mut w = BufWriter::new(stream);
        if let Some(export) = self.handshake(&mut r, &mut w)? {
            self.transmission(export, &mut r, &mut w)?;
        }
        Ok(())
    }

    /// The option haggling; the export chosen, or `None` when the client
    /// aborted.
    fn handshake(&self, r: &mut impl Read, w: &mut impl Write) -> io::Result<Option<&Export>> {
        w.write_all(&NBDMAGIC.to_be_bytes())?;
        w.write_all(&IHAVEOPT.to_be_bytes())?;
        w.write_all(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes())?;
        w.flush()?;
        let client_flags = read_u32(r)?;
        let no_zeroes = client_flags & u32::from(FLAG_NO_ZEROES) != 0;
        loop {
            if read_u64(r)? != IHAVEOPT {
                return Err(protocol("bad option magic"));
            }
            let option = read_u32(r)?;
            let len = read_u32(r)?;
            if len > MAX_OPTION {
                return Err(protocol("option too long"));
            }
            let mut data = vec![0; len as usize];
            r.read_exact(&mut data)?;
            match option {
                OPT_EXPORT_NAME => {
                    let Some(export) = self.find(&String::from_utf8_lossy(&data)) else {
                        // the protocol's only answer to an unknown name here
                        return Ok(None);
                    };
                    w.write_all(&export.file.size().to_be_bytes())?;
                    w.write_all(&TRANSMISSION_FLAGS.to_be_bytes())?;
                    if !no_zeroes {
                        w.write_all(&[0; 124])?;
                    }
                    w.flush()?;
                    return Ok(Some(export));
                }
                OPT_ABORT => {
                    option_reply(w, option, REP_ACK, &[])?;
                    return Ok(None);
                }
                OPT_LIST => {
                    for e in &self.exports {
                        let mut d = (e.name.len() as u32).to_be_bytes().to_vec();
                        d.extend_from_slice(e.name.as_bytes());
                        option_reply(w, option, REP_SERVER, &d)?;
                    }
                    option_reply(w, option, REP_ACK, &[])?;
                }
                OPT_INFO | OPT_GO => {
                    let name = data
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                        .and_then(|n| data.get(4..4 + n));
                    let Some(name) = name else {
                        option_reply(w, option, REP_ERR_INVALID, b"malformed request")?;
                        continue;
                    };
                    let name = String::from_utf8_lossy(name);
                    let Some(export) = self.find(&name) else {
                        let msg = format!("no disk {name:?} in this recovery point");
                        option_reply(w, option, REP_ERR_UNKNOWN, msg.as_bytes())?;
                        continue;
                    };
                    let mut info = INFO_EXPORT.to_be_bytes().to_vec();
                    info.extend_from_slice(&export.file.size().to_be_bytes());
                    info.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                    option_reply(w, option, REP_INFO, &info)?;
                    let mut sizes = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                    for s in [1u32, 4096, MAX_REQUEST] {
                        sizes.extend_from_slice(&s.to_be_bytes());
                    }
                    option_reply(w, option, REP_INFO, &sizes)?;
                    option_reply(w, option, REP_ACK, &[])?;
                    if option == OPT_GO {
                        return Ok(Some(export));
                    }
                }
                _ => option_reply(w, option, REP_ERR_UNSUP, &[])?,
            }
        }
    }

    fn transmission(&self, export: &Export, r: &mut impl Read, w: &mut impl Write) -> io::Result<()> {
        loop {
            let magic = match read_u32(r) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            };
            if magic != REQUEST_MAGIC {
                return Err(protocol("bad request magic"));
            }
            let _flags = read_u16(r)?;
            let kind = read_u16(r)?;
            let handle = read_u64(r)?;
            let offset = read_u64(r)?;
            let len = read_u32(r)?;
            let in_range =
                len <= MAX_REQUEST && offset.checked_add(u64::from(len)).is_some_and(|end| end <= export.file.size());
            match kind {
                CMD_READ if !in_range => simple_reply(w, handle, EINVAL, &[])?,
                CMD_READ => match export.file.read_at(self.vault, self.index, &self.cache, offset, u64::from(len)) {
                    Ok(data) => simple_reply(w, handle, 0, &data)?,
                    Err(_) => simple_reply(w, handle, EIO, &[])?,
                },
                CMD_WRITE => {
                    if len > MAX_REQUEST {
                        return Err(protocol("write too long"));
                    }
                    io::copy(&mut r.take(u64::from(len)), &mut io::sink())?;
                    simple_reply(w, handle, EPERM, &[])?;
                }
                CMD_DISC => return Ok(()),
                CMD_FLUSH | CMD_CACHE => simple_reply(w, handle, 0, &[])?,
                CMD_TRIM | CMD_WRITE_ZEROES => simple_reply(w, handle, EPERM, &[])?,
                _ => simple_reply(w, handle, EINVAL, &[])?,
            }
        }
    }
}

/// A stream whose reads wait out their timeouts until `stop` is set, so an
/// idle client holds its thread only until the server stops.
struct StopAware<'a> {
    stream: UnixStream,
    stop: &'a AtomicBool,
}

impl Read for StopAware<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.stream.read(buf) {
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if self.stop.load(Ordering::Relaxed) {
                        return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the server stops"));
                    }
                }
                other => return other,
            }
        }
    }
}
