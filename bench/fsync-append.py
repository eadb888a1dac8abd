#!/usr/bin/env python3
"""fdatasync latency of small appends, as a WAL does them, three writers at once.

Why: the WAL preallocates its active segment (src/wal/disk.rs) because an
fdatasync after a write that grows the file must also commit the new size to the
file system's journal. This measures that on the machine at hand: each of
WRITERS processes (default 3, like three nodes on one disk) writes SIZE-byte
records one after another and fdatasyncs after each, in a file that is
  append  - empty, so every write grows it (no preallocation);
  sparse  - extended with ftruncate first (what the WAL does);
  falloc  - allocated with posix_fallocate first.
Prints p50/p90/p99 and the mean per writer.

Usage: bench/fsync-append.py [DIR] [WRITERS] [COUNT] [SIZE]
       (defaults: /tmp 3 3000 180)
"""
import os
import sys
import time

def writer(path, mode, count, size):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    room = count * size + (1 << 20)
    if mode == "sparse":
        os.ftruncate(fd, room)
    elif mode == "falloc":
        os.posix_fallocate(fd, 0, room)
    os.fsync(fd)
    ts = []
    record = b"x" * size
    for _ in range(count):
        os.write(fd, record)
        t = time.perf_counter()
        os.fdatasync(fd)
        ts.append(time.perf_counter() - t)
    os.close(fd)
    os.unlink(path)
    ts.sort()
    q = lambda f: ts[int(len(ts) * f)] * 1e3
    print(f"{mode:7} p50 {q(0.5):.3f} ms  p90 {q(0.9):.3f}  p99 {q(0.99):.3f}  "
          f"mean {sum(ts) / len(ts) * 1e3:.3f}", flush=True)

def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
    writers = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 180
    for mode in ["append", "sparse", "falloc"]:
        pids = []
        for i in range(writers):
            pid = os.fork()
            if pid == 0:
                writer(os.path.join(d, f"fsync-append-{os.getpid()}"), mode, count, size)
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)

if __name__ == "__main__":
    main()
