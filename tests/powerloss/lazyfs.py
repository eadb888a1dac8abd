#!/usr/bin/env python3
"""A FUSE file system that loses what was not fsynced when the power is cut.

Why: a process crash keeps the page cache, a power loss does not. This file
system (the LazyFS model, kept small) holds everything in memory in two layers:
what processes see now, and what would survive a power cut. `fsync` of a file
makes its data (and size) survive; `fsync` of a directory makes its entries
survive. A "cut" (the `cut` command on the control socket, sent while no process
has files open here) throws away everything that would not survive and prints
how many bytes that was.

Directory entries (create, mkdir, rename, unlink, rmdir):
- default mode: survive at once (a journaling file system that orders metadata);
  only file data needs an fsync;
- `--strict`: survive only if the parent directory was fsynced after the change
  (POSIX: a new, renamed or removed name is not durable until then).

Usage: lazyfs.py MOUNTPOINT CONTROL_SOCKET [--strict]
       lazyfs.py --check   (exits 0 when fusepy and libfuse can be loaded)
Control socket (a Unix stream socket), one command per connection:
  `cut`   -> JSON {"lost_bytes", "lost_files", "lost_entries"}
  `stats` -> JSON {"files", "bytes", "unsynced_bytes"}
The file system runs until unmounted (`umount MOUNTPOINT`).

Invariants:
- every operation holds one lock, so a cut never sees half an operation;
- the kernel caches nothing (direct_io, zero entry and attribute timeouts), so
  after a cut every read sees the surviving state;
- an inode is reachable from the root in the surviving layer or it is dropped
  at the cut (with everything below it).
"""

import errno
import json
import os
import socket
import stat
import sys
import threading
import time

try:  # Debian's python3-fusepy names the module fusepy; pip's fusepy names it fuse
    import fusepy as fuselib
except ImportError:
    import fuse as fuselib

FUSE, FuseOSError, Operations = fuselib.FUSE, fuselib.FuseOSError, fuselib.Operations


class NullPathOk(fuselib.fuse_operations):
    """Lets libfuse call us for files that were unlinked while open (path None,
    the handle names the file): a node fsyncs or reads a removed segment through
    a descriptor it still holds, which works on any real file system."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.flag_nullpath_ok = 1


fuselib.fuse_operations = NullPathOk


class Node:
    """A file or a directory, with its current and its surviving state."""

    def __init__(self, is_dir, mode):
        self.is_dir = is_dir
        self.mode = mode
        self.mtime = time.time()
        if is_dir:
            self.entries = {}
            self.durable_entries = {}
        else:
            self.data = bytearray()
            self.durable_data = b""


def common_prefix(a, b):
    """Length of the common prefix of two byte strings (chunked compare)."""
    n = min(len(a), len(b))
    step = 1 << 16
    at = 0
    while at < n and a[at:at + step] == b[at:at + step]:
        at += step
    at = min(at, n)
    lo = max(0, at - step)
    while lo < n and a[lo] == b[lo]:
        lo += 1
    return lo


class LazyFS(Operations):
    def __init__(self, strict):
        self.strict = strict
        self.mutex = threading.Lock()
        self.root = Node(True, 0o755)
        self.handles = {}
        self.next_fh = 1

    # ------------------------------------------------------------ helpers

    def lookup(self, path):
        node = self.root
        for part in [p for p in path.split("/") if p]:
            if not node.is_dir or part not in node.entries:
                raise FuseOSError(errno.ENOENT)
            node = node.entries[part]
        return node

    def parent_of(self, path):
        head, name = os.path.split(path.rstrip("/"))
        parent = self.lookup(head or "/")
        if not parent.is_dir:
            raise FuseOSError(errno.ENOTDIR)
        return parent, name

    def changed(self, directory):
        """A directory's entries changed: in default mode that survives at once."""
        if not self.strict:
            directory.durable_entries = dict(directory.entries)

    def node_of(self, path, fh):
        if fh and fh in self.handles:
            return self.handles[fh]
        if path is None:
            raise FuseOSError(errno.EBADF)
        return self.lookup(path)

    # ------------------------------------------------------------ metadata

    def getattr(self, path, fh=None):
        with self.mutex:
            n = self.node_of(path, fh)
            kind = stat.S_IFDIR if n.is_dir else stat.S_IFREG
            size = 4096 if n.is_dir else len(n.data)
            return {
                "st_mode": kind | n.mode,
                "st_nlink": 2 if n.is_dir else 1,
                "st_size": size,
                "st_blocks": (size + 511) // 512,
                "st_mtime": n.mtime,
                "st_ctime": n.mtime,
                "st_atime": n.mtime,
                "st_uid": os.getuid(),
                "st_gid": os.getgid(),
            }

    def readdir(self, path, fh):
        with self.mutex:
            n = self.lookup(path)
            return [".", ".."] + list(n.entries)

    def statfs(self, path):
        # Plenty of room: the disk-space health check must not trip.
        return {
            "f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 24,
            "f_bfree": 1 << 23, "f_bavail": 1 << 23, "f_files": 1 << 20,
            "f_ffree": 1 << 19, "f_favail": 1 << 19, "f_namemax": 255,
        }

    def chmod(self, path, mode):
        with self.mutex:
            self.lookup(path).mode = mode & 0o7777

    def chown(self, path, uid, gid):
        pass

    def utimens(self, path, times=None):
        with self.mutex:
            self.lookup(path).mtime = time.time()

    def access(self, path, amode):
        with self.mutex:
            self.lookup(path)

    # ------------------------------------------------------------ directory entries

    def mkdir(self, path, mode):
        with self.mutex:
            parent, name = self.parent_of(path)
            if name in parent.entries:
                raise FuseOSError(errno.EEXIST)
            parent.entries[name] = Node(True, mode & 0o7777)
            self.changed(parent)

    def rmdir(self, path):
        with self.mutex:
            parent, name = self.parent_of(path)
            n = parent.entries.get(name)
            if n is None:
                raise FuseOSError(errno.ENOENT)
            if not n.is_dir:
                raise FuseOSError(errno.ENOTDIR)
            if n.entries:
                raise FuseOSError(errno.ENOTEMPTY)
            del parent.entries[name]
            self.changed(parent)

    def create(self, path, mode, fi=None):
        with self.mutex:
            parent, name = self.parent_of(path)
            n = parent.entries.get(name)
            if n is None:
                n = Node(False, mode & 0o7777)
                parent.entries[name] = n
                self.changed(parent)
            return self.new_handle(n)

    def unlink(self, path):
        with self.mutex:
            parent, name = self.parent_of(path)
            n = parent.entries.get(name)
            if n is None:
                raise FuseOSError(errno.ENOENT)
            if n.is_dir:
                raise FuseOSError(errno.EISDIR)
            del parent.entries[name]
            self.changed(parent)

    def rename(self, old, new):
        with self.mutex:
            op, oname = self.parent_of(old)
            np, nname = self.parent_of(new)
            n = op.entries.get(oname)
            if n is None:
                raise FuseOSError(errno.ENOENT)
            target = np.entries.get(nname)
            if target is not None and target.is_dir and target.entries:
                raise FuseOSError(errno.ENOTEMPTY)
            del op.entries[oname]
            np.entries[nname] = n
            self.changed(op)
            self.changed(np)

    def fsyncdir(self, path, datasync, fh):
        with self.mutex:
            n = self.lookup(path)
            n.durable_entries = dict(n.entries)
            return 0

    # ------------------------------------------------------------ file data

    def new_handle(self, node):
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = node
        return fh

    def open(self, path, flags):
        with self.mutex:
            n = self.lookup(path)
            if n.is_dir:
                raise FuseOSError(errno.EISDIR)
            return self.new_handle(n)

    def release(self, path, fh):
        with self.mutex:
            self.handles.pop(fh, None)
            return 0

    def flush(self, path, fh):
        return 0

    def read(self, path, size, offset, fh):
        with self.mutex:
            n = self.node_of(path, fh)
            return bytes(n.data[offset:offset + size])

    def write(self, path, data, offset, fh):
        with self.mutex:
            n = self.node_of(path, fh)
            if offset > len(n.data):
                n.data.extend(b"\0" * (offset - len(n.data)))
            n.data[offset:offset + len(data)] = data
            n.mtime = time.time()
            return len(data)

    def truncate(self, path, length, fh=None):
        with self.mutex:
            n = self.node_of(path, fh)
            if length < len(n.data):
                del n.data[length:]
            else:
                n.data.extend(b"\0" * (length - len(n.data)))
            n.mtime = time.time()

    def fsync(self, path, datasync, fh):
        with self.mutex:
            n = self.node_of(path, fh)
            n.durable_data = bytes(n.data)
            return 0

    # ------------------------------------------------------------ the power cut

    def cut(self):
        """Drops everything that would not survive; returns what was lost."""
        with self.mutex:
            before = {}
            self.walk(self.root, lambda n: before.setdefault(id(n), n), durable=False)
            after = {}
            self.walk(self.root, lambda n: after.setdefault(id(n), n), durable=True)
            lost_bytes = lost_files = lost_entries = 0
            for key, n in before.items():
                if n.is_dir:
                    cur, dur = n.entries, n.durable_entries
                    lost_entries += sum(1 for k in set(cur) | set(dur)
                                        if cur.get(k) is not dur.get(k))
                    continue
                if key not in after:
                    lost_files += 1
                    lost_bytes += len(n.data)
                elif n.data != n.durable_data:
                    lost_bytes += len(n.data) - common_prefix(n.data, n.durable_data)
            for n in after.values():
                if n.is_dir:
                    n.entries = dict(n.durable_entries)
                else:
                    n.data = bytearray(n.durable_data)
            self.handles.clear()
            return {"lost_bytes": lost_bytes, "lost_files": lost_files,
                    "lost_entries": lost_entries}

    def walk(self, node, visit, durable):
        stack = [node]
        while stack:
            n = stack.pop()
            visit(n)
            if n.is_dir:
                stack.extend((n.durable_entries if durable else n.entries).values())

    def stats(self):
        with self.mutex:
            files = total = unsynced = 0
            nodes = []
            self.walk(self.root, nodes.append, durable=False)
            for n in nodes:
                if not n.is_dir:
                    files += 1
                    total += len(n.data)
                    if n.data != n.durable_data:
                        unsynced += len(n.data) - common_prefix(n.data, n.durable_data)
            return {"files": files, "bytes": total, "unsynced_bytes": unsynced}


def serve_control(fs, path):
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    while True:
        conn, _ = srv.accept()
        with conn:
            cmd = conn.recv(64).decode().strip()
            if cmd == "cut":
                reply = fs.cut()
            elif cmd == "stats":
                reply = fs.stats()
            else:
                reply = {"error": f"unknown command {cmd!r}"}
            conn.sendall((json.dumps(reply) + "\n").encode())


def main():
    if "--check" in sys.argv:
        # The imports above worked: fusepy and libfuse are there.
        print(f"lazyfs: fusepy from {fuselib.__file__}")
        return
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        sys.exit(__doc__)
    mountpoint, control = args
    fs = LazyFS(strict="--strict" in sys.argv)
    threading.Thread(target=serve_control, args=(fs, control), daemon=True).start()
    FUSE(fs, mountpoint, foreground=True, nothreads=False, direct_io=True,
         hard_remove=True, entry_timeout=0, attr_timeout=0, negative_timeout=0,
         fsname="lazyfs", allow_other=True)


if __name__ == "__main__":
    main()
