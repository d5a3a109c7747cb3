//! Corpora that resemble what users send, built from material any Debian
//! machine has (not generated patterns): an ext4 image of `/usr/share`, the
//! memory of a running Python process, SQLite database pages, access logs
//! whose fields come from the real file tree, already-compressed files found
//! on the machine, and random bytes.
//!
//! Each is built once per size and cached under the cache directory
//! (`/var/tmp/dwcp-corpora` by default).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The corpora, in table order.
pub const NAMES: [&str; 6] = ["fs-image", "memory", "database", "logs", "media", "random"];

/// What each corpus is, for the report.
pub fn describe(name: &str) -> &'static str {
    match name {
        "fs-image" => "ext4 image of /usr/share (mke2fs -d), evenly spaced 1 MiB extents",
        "memory" => {
            "readable mappings of a Python process holding parsed /usr/share/doc text and dicts"
        }
        "database" => "SQLite file (4 KiB pages, indexes) of /usr's file list and dpkg status",
        "logs" => "access-log lines, paths and sizes from walking /usr",
        "media" => "already-compressed files on this machine (.gz .xz .bz2 .zst .png .jpg)",
        "random" => "/dev/urandom",
        _ => "?",
    }
}

/// Returns the path of corpus `name` of exactly `bytes` bytes, building it
/// in `cache` if it is not there.
///
/// # Errors
/// A tool it needs is missing (mke2fs, python3) or a file cannot be written.
pub fn get(cache: &Path, name: &str, bytes: u64) -> Result<PathBuf, String> {
    std::fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let path = cache.join(format!("{name}-{}.bin", bytes >> 20));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes) {
        return Ok(path);
    }
    let data = match name {
        "fs-image" => spaced(&fs_image(cache)?, bytes)?,
        "memory" => process_memory(bytes)?,
        "database" => database(cache, bytes)?,
        "logs" => logs(bytes),
        "media" => media(bytes)?,
        "random" => random(bytes)?,
        other => return Err(format!("unknown corpus {other:?}; known: {NAMES:?}")),
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &data).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
    Ok(path)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// An ext4 image populated from `/usr/share` (`mke2fs -d`, no mount needed),
/// built once.
fn fs_image(cache: &Path) -> Result<PathBuf, String> {
    let img = cache.join("usr-share.ext4");
    if img.exists() {
        return Ok(img);
    }
    let tmp = cache.join("usr-share.ext4.tmp");
    let _ = std::fs::remove_file(&tmp);
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d", "/usr/share"])
        .arg(&tmp)
        .arg("1200M"))
    .map_err(|e| format!("{e} (the fs-image corpus needs mke2fs from e2fsprogs)"))?;
    std::fs::rename(&tmp, &img).map_err(|e| e.to_string())?;
    Ok(img)
}

/// `bytes` bytes of `file` taken as evenly spaced 1 MiB extents, so the
/// corpus samples the whole file (metadata, file data, free space alike).
fn spaced(file: &Path, bytes: u64) -> Result<Vec<u8>, String> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let extent = 1u64 << 20;
    let n = bytes.div_ceil(extent);
    let step = (len.saturating_sub(extent) / n.max(1)).max(extent);
    let mut out = Vec::with_capacity(bytes as usize);
    let mut k = 0;
    while (out.len() as u64) < bytes {
        let at = (k * step) % len.saturating_sub(extent).max(1);
        f.seek(SeekFrom::Start(at)).map_err(|e| e.to_string())?;
        let want = extent.min(bytes - out.len() as u64) as usize;
        let start = out.len();
        out.resize(start + want, 0);
        f.read_exact(&mut out[start..]).map_err(|e| e.to_string())?;
        k += 1;
    }
    Ok(out)
}

/// The readable memory of a Python process that parsed documentation text
/// into dicts and lists (a service's heap: object headers, pointers,
/// refcounts, strings), read through `/proc/PID/mem` (needs root or
/// ptrace rights over the child).
fn process_memory(bytes: u64) -> Result<Vec<u8>, String> {
    let script = format!(
        r#"
import os, sys, gzip, json, email, http.client, xml.dom.minidom, sqlite3, decimal, collections
want = {bytes} * 1.3
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
texts = []
for root, dirs, files in os.walk('/usr/share/doc'):
    for f in files:
        p = os.path.join(root, f)
        try:
            data = gzip.open(p).read() if f.endswith('.gz') else open(p, 'rb').read()
        except Exception:
            continue
        texts.append((p, data.decode('utf-8', 'replace')))
docs, index, n = [], collections.defaultdict(list), 0
while rss() < want and texts:
    for p, text in texts:
        lines = text.splitlines()
        docs.append({{'path': p, 'pass': n, 'size': len(text), 'lines': lines}})
        for i, l in enumerate(lines[:100]):
            for w in l.split()[:6]:
                index[w].append((len(docs), i, n))
        if rss() >= want:
            break
    n += 1
print('ready', flush=True)
sys.stdin.read()
"#
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("python3: {e} (the memory corpus needs python3)"))?;
    let mut line = [0u8; 6];
    let ready = child
        .stdout
        .as_mut()
        .map(|o| o.read_exact(&mut line))
        .transpose()
        .map_err(|e| format!("python3 did not get ready: {e}"));
    let dump = ready.and_then(|_| dump_memory(child.id(), bytes));
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    let mut out = dump?;
    if (out.len() as u64) < bytes {
        return Err(format!(
            "the process had {} MiB readable, {} MiB wanted",
            out.len() >> 20,
            bytes >> 20
        ));
    }
    // Keep the last `bytes`: the heap grows at the end, the first mappings
    // are the interpreter's code.
    let cut = out.len() - bytes as usize;
    out.drain(..cut);
    Ok(out)
}

fn dump_memory(pid: u32, bytes: u64) -> Result<Vec<u8>, String> {
    use std::io::{Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| e.to_string())?;
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem"))
        .map_err(|e| format!("/proc/{pid}/mem: {e} (needs root)"))?;
    let mut out = Vec::new();
    for l in maps.lines() {
        let mut parts = l.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !perms.starts_with('r') || l.contains("[vvar]") || l.contains("[vsyscall]") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        if mem.seek(SeekFrom::Start(a)).is_err() {
            continue;
        }
        let start = out.len();
        out.resize(start + (b - a) as usize, 0);
        if mem.read_exact(&mut out[start..]).is_err() {
            out.truncate(start);
        }
        if out.len() as u64 > bytes * 4 {
            break;
        }
    }
    Ok(out)
}

/// A SQLite database (4 KiB pages, two indexes) of `/usr`'s file list, one
/// row per file per pass with the pass number, plus dpkg's package records,
/// grown until it holds `bytes`.
fn database(cache: &Path, bytes: u64) -> Result<Vec<u8>, String> {
    let db = cache.join("files.sqlite.tmp");
    let _ = std::fs::remove_file(&db);
    let script = format!(
        r#"
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute('PRAGMA page_size=4096')
db.execute('CREATE TABLE files (id INTEGER PRIMARY KEY, pass INT, path TEXT, dir TEXT, size INT, mode INT, mtime REAL, uid INT)')
db.execute('CREATE INDEX files_path ON files(path)')
db.execute('CREATE INDEX files_size ON files(size, mtime)')
db.execute('CREATE TABLE packages (name TEXT PRIMARY KEY, record TEXT)')
try:
    for rec in open('/var/lib/dpkg/status').read().split('\n\n'):
        name = rec.split('\n', 1)[0].removeprefix('Package: ')
        db.execute('INSERT OR REPLACE INTO packages VALUES (?, ?)', (name, rec))
except OSError:
    pass
p = 0
while os.path.getsize(sys.argv[1]) < {bytes}:
    rows = []
    for root, dirs, files in os.walk('/usr'):
        for f in files:
            path = os.path.join(root, f)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            rows.append((p, path, root, st.st_size, st.st_mode, st.st_mtime + p, st.st_uid))
            if len(rows) >= 20000:
                db.executemany('INSERT INTO files (pass, path, dir, size, mode, mtime, uid) VALUES (?,?,?,?,?,?,?)', rows)
                db.commit()
                rows = []
                if os.path.getsize(sys.argv[1]) >= {bytes}:
                    break
        if os.path.getsize(sys.argv[1]) >= {bytes}:
            break
    db.executemany('INSERT INTO files (pass, path, dir, size, mode, mtime, uid) VALUES (?,?,?,?,?,?,?)', rows)
    db.commit()
    p += 1
db.close()
"#
    );
    run(Command::new("python3").args(["-c", &script]).arg(&db))
        .map_err(|e| format!("{e} (the database corpus needs python3 with sqlite3)"))?;
    let mut out = std::fs::read(&db).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&db);
    out.truncate(bytes as usize);
    Ok(out)
}

/// A deterministic generator (xorshift64*) for the fields real logs vary.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn walk(dir: &Path, out: &mut Vec<(String, u64)>, limit: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if out.len() >= limit {
            return;
        }
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out, limit),
            Ok(t) if t.is_file() => {
                let size = e.metadata().map_or(0, |m| m.len());
                out.push((p.display().to_string(), size));
            }
            _ => {}
        }
    }
}

/// Access-log lines (combined log format) for requests of the files under
/// `/usr`, with client addresses, status codes and agents varying.
fn logs(bytes: u64) -> Vec<u8> {
    let mut files = Vec::new();
    walk(Path::new("/usr"), &mut files, 200_000);
    if files.is_empty() {
        files.push(("/index.html".into(), 512));
    }
    let agents = [
        "curl/7.88.1",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "Prometheus/2.42.0",
        "apt-http/2.6.1",
        "Go-http-client/1.1",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(bytes as usize + 512);
    let mut t = 1_764_748_800u64; // 2025-12-03 08:00:00 UTC
    while (out.len() as u64) < bytes {
        let r = rng.next();
        let (path, size) = &files[(r % files.len() as u64) as usize];
        t += r >> 61;
        let status = match (r >> 8) % 20 {
            0 => 404,
            1 => 304,
            2 => 500,
            _ => 200,
        };
        let _ = writeln!(
            out,
            "10.{}.{}.{} - - [{}] \"GET {} HTTP/1.1\" {} {} \"-\" \"{}\" rt={}.{:03}",
            (r >> 16) % 4,
            (r >> 24) % 256,
            (r >> 32) % 256,
            t,
            path,
            status,
            if status == 200 { *size } else { 0 },
            agents[((r >> 40) % agents.len() as u64) as usize],
            (r >> 48) % 3,
            (r >> 50) % 1000,
        );
    }
    out.truncate(bytes as usize);
    out
}

fn find_compressed(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 12 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => find_compressed(&p, out, depth + 1),
            Ok(t) if t.is_file() => {
                let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
                if matches!(ext, "gz" | "xz" | "bz2" | "zst" | "png" | "jpg" | "jpeg") {
                    out.push(p);
                }
            }
            _ => {}
        }
    }
}

/// Already-compressed files found under `/usr`, `/var` and `/root`, largest
/// first, repeated if the machine has fewer than `bytes`.
fn media(bytes: u64) -> Result<Vec<u8>, String> {
    let mut files = Vec::new();
    for d in ["/usr", "/var/cache", "/var/lib", "/root"] {
        find_compressed(Path::new(d), &mut files, 0);
    }
    let mut sized: Vec<(u64, PathBuf)> = files
        .into_iter()
        .filter_map(|p| std::fs::metadata(&p).ok().map(|m| (m.len(), p)))
        .filter(|(len, _)| *len >= 4096)
        .collect();
    sized.sort();
    sized.reverse();
    if sized.is_empty() {
        return Err("no compressed files (.gz, .xz, ...) found on this machine".into());
    }
    let mut out = Vec::with_capacity(bytes as usize);
    'fill: loop {
        for (_, p) in &sized {
            if let Ok(d) = std::fs::read(p) {
                out.extend_from_slice(&d);
            }
            if out.len() as u64 >= bytes {
                break 'fill;
            }
        }
    }
    out.truncate(bytes as usize);
    Ok(out)
}

fn random(bytes: u64) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; bytes as usize];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(out)
}
