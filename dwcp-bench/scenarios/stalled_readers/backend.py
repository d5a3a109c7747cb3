#!/usr/bin/env python3
"""Backend behind sidecar B. Each connection: the client sends a decimal byte
count and '\n'; the server then sends that many bytes of data.bin read
cyclically (incompressible random bytes, length 64 MiB + 4093, so that any
misplaced or lost chunk shows as a mismatch) with sendfile, then closes.
Usage: backend.py PORT DATAFILE"""
import os, socket, sys, threading

port = int(sys.argv[1]); path = sys.argv[2]
L = os.path.getsize(path)

def serve(conn):
    try:
        buf = b""
        while b"\n" not in buf:
            d = conn.recv(64)
            if not d:
                return
            buf += d
        n = int(buf.split(b"\n")[0])
        with open(path, "rb") as f:
            pos = 0
            while pos < n:
                off = pos % L
                cnt = min(L - off, n - pos)
                sent = os.sendfile(conn.fileno(), f.fileno(), off, cnt)
                if sent == 0:
                    return
                pos += sent
        conn.shutdown(socket.SHUT_WR)
    except OSError as e:
        print("backend: connection ended:", e, file=sys.stderr, flush=True)
    finally:
        conn.close()

s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(512)
print("backend listening", port, flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
