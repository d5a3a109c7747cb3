#!/usr/bin/env python3
"""One measurement run of the stalled-readers reproduction through a pair of
dwcp-daemon sidecars on loopback (fresh daemons and backend each run).

  A (node-a, client side): tunnel 127.0.0.1:15000 -> peer node-b, service "blob"
  B (node-b, server side): service "blob" -> backend.py on 127.0.0.1:17000

K "stalled" clients connect through A, ask for --stall-bytes, read
--stall-read bytes at speed and stop reading (sockets stay open). After --wait s one more client asks for
--measure-bytes, reads everything and verifies it; its time is the result
(--timeout s without EOF = hung). With --resume, the stalled clients then read
the rest and every byte is checked (count and content). Ends by recording both
daemons' VmRSS/VmHWM, /metrics, and warnings/errors in their logs.
One JSON line per run is appended to --out; summarize.py makes the table.

  cargo build --release -p dwcp-daemon
  python3 dwcp-bench/scenarios/stalled_readers/run.py --k 20 --stall-read 16777216 --stall-bytes 268435456

The seeded data file and throwaway certificates are made on the first run
under --work (default /tmp/dwcp-stalled-readers).
"""
import argparse, json, os, signal, socket, subprocess, sys, threading, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1024 * 1024
ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(HERE, "..", "..", "..", "target", "release", "dwcp-daemon"),
                help="path to dwcp-daemon")
ap.add_argument("--work", default="/tmp/dwcp-stalled-readers", help="data file, certificates and per-run logs")
ap.add_argument("--transport", default="quic", choices=["quic", "tcp"])
ap.add_argument("--k", type=int, required=True)
ap.add_argument("--run", default="0")
ap.add_argument("--stall-bytes", type=int, default=1024 * MiB)
ap.add_argument("--stall-read", type=int, default=1 * MiB)
ap.add_argument("--measure-bytes", type=int, default=32 * MiB)
ap.add_argument("--stall-phase", type=float, default=10.0, help="deadline (s) for all stalled clients' first reads")
ap.add_argument("--wait", type=float, default=3.0)
ap.add_argument("--timeout", type=float, default=60.0)
ap.add_argument("--resume", action="store_true")
ap.add_argument("--resume-timeout", type=float, default=600.0)
ap.add_argument("--compression", default="off")
ap.add_argument("--out", default=None, help="JSON lines file (default WORK/results.jsonl)")
a = ap.parse_args()

binpath = os.path.abspath(a.bin)
os.makedirs(a.work, exist_ok=True)
out = a.out or os.path.join(a.work, "results.jsonl")
tag = f"{a.transport}-k{a.k}-sr{a.stall_read//MiB}-r{a.run}-{int(time.time())}"
rundir = os.path.join(a.work, "runs", tag)
os.makedirs(rundir, exist_ok=True)
certs = os.path.join(a.work, "certs")
if not os.path.exists(os.path.join(certs, "node-b.key")):
    subprocess.run([binpath, "dev-certs", "--dir", certs, "node-a", "node-b"], check=True,
                   stdout=subprocess.DEVNULL)
data_path = os.path.join(a.work, "data.bin")
if not os.path.exists(data_path):
    # 64 MiB + 4093 seeded incompressible bytes: a misplaced or lost chunk
    # shows as a mismatch, the odd length as a shifted one.
    import random
    rng = random.Random(1)
    with open(data_path + ".tmp", "wb") as f:
        f.write(rng.randbytes(64 * MiB + 4093))
    os.replace(data_path + ".tmp", data_path)
DATA = open(data_path, "rb").read()
L = len(DATA)
DATA2 = DATA + DATA[: 2 * MiB]

cfg_b = f"""
[node]
name = "node-b"
[tls]
cert = "{certs}/node-b.pem"
key = "{certs}/node-b.key"
ca = "{certs}/ca.pem"
[listen]
quic = "127.0.0.1:24433"
tcp = "127.0.0.1:24434"
[admin]
listen = "127.0.0.1:29090"
[lifecycle]
drain_grace_secs = 1
[[peers]]
name = "node-a"
[[services]]
name = "blob"
target = "127.0.0.1:17000"
allowed_peers = ["node-a"]
"""
peer_addr = "127.0.0.1:24433" if a.transport == "quic" else "127.0.0.1:24434"
cfg_a = f"""
[node]
name = "node-a"
[tls]
cert = "{certs}/node-a.pem"
key = "{certs}/node-a.key"
ca = "{certs}/ca.pem"
[listen]
quic = ""
[admin]
listen = "127.0.0.1:19090"
[lifecycle]
drain_grace_secs = 1
[[peers]]
name = "node-b"
address = "{peer_addr}"
transport = "{a.transport}"
[[tunnels]]
name = "blob"
listen = "127.0.0.1:15000"
peer = "node-b"
service = "blob"
compression = "{a.compression}"
"""
open(os.path.join(rundir, "a.toml"), "w").write(cfg_a)
open(os.path.join(rundir, "b.toml"), "w").write(cfg_b)

procs = []
def start(name, argv):
    log = open(os.path.join(rundir, name + ".log"), "w")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    procs.append((name, p))
    return p

def http(url, timeout=3):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()

def rss(pid):
    out = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) // 1024  # MiB
    except OSError:
        pass
    return out

class Reader:
    """Reads a response, checking each byte against data.bin (cyclic)."""
    def __init__(self, sock):
        self.s = sock; self.pos = 0; self.bad_at = None; self.eof = False
        self.buf = bytearray(MiB); self.err = None
    def read(self, limit, deadline):
        mv = memoryview(self.buf)
        while self.pos < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.s.settimeout(min(left, 1.0))
            try:
                n = self.s.recv_into(mv, min(MiB, limit - self.pos))
            except socket.timeout:
                continue
            except OSError as e:
                self.err = repr(e); return False
            if n == 0:
                self.eof = True; return False
            off = self.pos % L
            if self.bad_at is None and bytes(mv[:n]) != DATA2[off:off + n]:
                self.bad_at = self.pos
            self.pos += n
        return True
    def read_to_eof(self, expect, deadline):
        self.read(expect, deadline)
        if self.pos >= expect and not self.eof and self.err is None:
            # expect EOF right after
            self.s.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
            try:
                extra = self.s.recv(1)
                if extra == b"": self.eof = True
                else: self.pos += len(extra)
            except (socket.timeout, OSError) as e:
                self.err = repr(e)
        return self.eof and self.pos == expect and self.bad_at is None

def connect(nbytes):
    s = socket.create_connection(("127.0.0.1", 15000), timeout=10)
    s.sendall(b"%d\n" % nbytes)
    return s

res = {"bin": binpath, "transport": a.transport, "k": a.k,
       "run": a.run, "time_start": time.strftime("%H:%M:%S"), "uptime": open("/proc/loadavg").read().split()[:3]}
try:
    start("backend", [sys.executable, os.path.join(HERE, "backend.py"), "17000", data_path])
    pb = start("b", [binpath, "run", "--config", os.path.join(rundir, "b.toml")])
    time.sleep(0.3)
    pa = start("a", [binpath, "run", "--config", os.path.join(rundir, "a.toml")])
    t0 = time.monotonic()
    while True:
        try:
            if '"connected"' in http("http://127.0.0.1:19090/health/detailed"):
                break
        except Exception:
            pass
        if time.monotonic() - t0 > 15:
            raise RuntimeError("A never connected to B")
        time.sleep(0.1)
    res["connect_s"] = round(time.monotonic() - t0, 2)

    stalled = []
    stall_fail = 0
    t_st = time.monotonic()
    stall_dl = t_st + a.stall_phase  # one deadline shared by all stalled clients' first reads
    for i in range(a.k):
        s = connect(a.stall_bytes)
        r = Reader(s)
        ok = r.read(a.stall_read, max(stall_dl, time.monotonic() + 0.5))
        if not ok:
            stall_fail += 1
        stalled.append(r)
    res["stalled_first_read_failures"] = stall_fail
    res["stall_phase_s"] = round(time.monotonic() - t_st, 2)
    res["stall_read"] = a.stall_read
    time.sleep(a.wait)

    m = Reader(connect(a.measure_bytes))
    t1 = time.monotonic()
    ok = m.read_to_eof(a.measure_bytes, t1 + a.timeout)
    dt = time.monotonic() - t1
    res.update(measure_ok=ok, measure_s=round(dt, 3), measure_bytes=m.pos,
               measure_eof=m.eof, measure_bad_at=m.bad_at, measure_err=m.err)
    m.s.close()

    if a.resume:
        dl = time.monotonic() + a.resume_timeout
        oks = [None] * len(stalled)
        def go(i, r):
            oks[i] = r.read_to_eof(a.stall_bytes, dl)
        t2 = time.monotonic()
        ths = [threading.Thread(target=go, args=(i, r)) for i, r in enumerate(stalled)]
        for t in ths: t.start()
        for t in ths: t.join()
        res["resume_s"] = round(time.monotonic() - t2, 2)
        res["resume_ok"] = sum(1 for o in oks if o)
        res["resume_detail"] = [dict(bytes=r.pos, eof=r.eof, bad_at=r.bad_at, err=r.err)
                                for r in stalled if not (r.eof and r.pos == a.stall_bytes and r.bad_at is None)]
    res["rss_a"] = rss(pa.pid); res["rss_b"] = rss(pb.pid)
    for n, port in (("a", 19090), ("b", 29090)):
        try:
            open(os.path.join(rundir, f"metrics-{n}.txt"), "w").write(http(f"http://127.0.0.1:{port}/metrics"))
            open(os.path.join(rundir, f"status-{n}.json"), "w").write(http(f"http://127.0.0.1:{port}/api/v1/dwcp/status"))
        except Exception as e:
            res[f"metrics_{n}_err"] = repr(e)
    for r in stalled:
        r.s.close()
except Exception as e:
    res["error"] = repr(e)
finally:
    kill_ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    for name, p in reversed(procs):
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for name, p in procs:
        try:
            rc = p.wait(timeout=8)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL); rc = "killed"
        res[f"exit_{name}"] = rc
    for n in ("a", "b"):
        lines = open(os.path.join(rundir, n + ".log")).read().splitlines()
        bad = [l for l in lines if (" WARN " in l or " ERROR " in l or "panic" in l.lower()) and l[:19] < kill_ts]
        res[f"log_{n}_warn_err"] = len(bad)
        if bad:
            res[f"log_{n}_sample"] = bad[:3]
    print(json.dumps(res), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(res) + "\n")
