//! What an operator does by hand: a compressor piped over a plain TCP
//! connection (`zstd -3 -c FILE | nc host port` on one side, `nc -l | zstd
//! -d` on the other), with the compressor's CPU time on both ends.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One hand-made pipe: the sending and receiving commands.
#[derive(Debug, Clone, Copy)]
pub struct Pipe {
    /// Name in the report.
    pub name: &'static str,
    /// Sender: reads the file given as the last argument, writes to stdout.
    pub compress: &'static [&'static str],
    /// Receiver: reads stdin, writes the original bytes to stdout.
    pub decompress: &'static [&'static str],
}

/// The pipes compared, cheapest first.
pub const PIPES: [Pipe; 5] = [
    Pipe {
        name: "pipe: plain",
        compress: &["cat"],
        decompress: &["cat"],
    },
    Pipe {
        name: "pipe: lz4",
        compress: &["lz4", "-1", "-c", "-q"],
        decompress: &["lz4", "-d", "-c", "-q"],
    },
    Pipe {
        name: "pipe: zstd -1",
        compress: &["zstd", "-1", "-c", "-q"],
        decompress: &["zstd", "-d", "-c", "-q"],
    },
    Pipe {
        name: "pipe: zstd -3",
        compress: &["zstd", "-3", "-c", "-q"],
        decompress: &["zstd", "-d", "-c", "-q"],
    },
    Pipe {
        name: "pipe: zstd -T0 -3",
        compress: &["zstd", "-T0", "-3", "-c", "-q"],
        decompress: &["zstd", "-d", "-c", "-q"],
    },
];

/// Why the pipes cannot run here, if they cannot (a tool is missing).
pub fn unavailable() -> Option<String> {
    for tool in ["zstd", "lz4"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Some(format!(
                "`{tool}` is not installed (apt-get install zstd lz4): the pipe comparison is skipped"
            ));
        }
    }
    None
}

/// CPU seconds (user + system) of a finished child, reaped with `wait4`
/// (std's `Child::wait` does not return the child's resource usage).
#[allow(unsafe_code)]
fn reap(child: &Child) -> Result<f64, String> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child's pid, with valid out-pointers.
    let rc = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    if rc < 0 {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("exited with status {status:#x}"));
    }
    Ok(secs(ru.ru_utime) + secs(ru.ru_stime))
}

fn spawn(argv: &[&str], file: Option<&Path>) -> Result<Child, String> {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    if let Some(f) = file {
        cmd.arg(f).stdin(Stdio::null());
    } else {
        cmd.stdin(Stdio::piped());
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{}: {e}", argv[0]))
}

/// The sending end: runs the compressor on `file` and copies its output to
/// `sock`. Returns (bytes on the connection, compressor CPU seconds).
///
/// # Errors
/// The compressor fails or the connection breaks.
pub fn send(pipe: &Pipe, file: &Path, mut sock: TcpStream) -> Result<(u64, f64), String> {
    let mut child = spawn(pipe.compress, Some(file))?;
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut wire = 0u64;
    loop {
        let n = out.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        sock.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        wire += n as u64;
    }
    sock.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let cpu = reap(&child).map_err(|e| format!("{}: {e}", pipe.name))?;
    // Wait for the receiver to close: everything was consumed.
    let _ = sock.set_read_timeout(Some(Duration::from_secs(600)));
    let _ = sock.read(&mut buf);
    Ok((wire, cpu))
}

/// What the receiving end got.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Original bytes out of the decompressor.
    pub bytes: u64,
    /// Their CRC-32.
    pub crc: u32,
    /// Decompressor CPU seconds.
    pub cpu: f64,
    /// When the last byte came out.
    pub done: std::time::Instant,
}

/// The receiving end: feeds what arrives on `sock` to the decompressor and
/// checks what comes out.
///
/// # Errors
/// The decompressor fails or the connection breaks.
pub fn receive(pipe: &Pipe, sock: TcpStream) -> Result<Received, String> {
    let mut child = spawn(pipe.decompress, None)?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut rd = sock.try_clone().map_err(|e| e.to_string())?;
    let feeder = std::thread::spawn(move || -> Result<(), String> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = rd.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(());
            }
            stdin.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        }
    });
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = stdout.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    let done = std::time::Instant::now();
    feeder.join().map_err(|_| "feeder panicked".to_string())??;
    let cpu = reap(&child).map_err(|e| format!("{}: {e}", pipe.name))?;
    let _ = sock.shutdown(Shutdown::Both);
    Ok(Received {
        bytes,
        crc: h.finalize(),
        cpu,
        done,
    })
}
