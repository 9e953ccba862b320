"""A file system that ignores case, for the tests: every path is folded to lower case
before it reaches the backing directory, as on macOS's default volumes or FAT.

    python casefold_fs.py BACKING MOUNTPOINT

Runs in the foreground until unmounted (umount MOUNTPOINT) or killed. Needs FUSE
(libfuse 3, /dev/fuse) and root to mount; mfusepy is in scripts/test-requirements.txt.
"""

import errno
import os
import sys

from mfusepy import FUSE, FuseOSError, Operations


class CaseFolding(Operations):
    use_ns = True

    def __init__(self, root):
        self.root = root

    def _path(self, path):
        return os.path.join(self.root, path.lstrip("/").lower())

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            raise FuseOSError(e.errno or errno.EIO) from e

    def access(self, path, mode):
        if not os.access(self._path(path), mode):
            raise FuseOSError(errno.EACCES)

    def getattr(self, path, fh=None):
        st = self._call(os.lstat, self._path(path))
        keys = ("st_gid", "st_mode", "st_nlink", "st_size", "st_uid")
        attrs = {k: getattr(st, k) for k in keys}
        for k in ("st_atime", "st_ctime", "st_mtime"):
            attrs[k] = getattr(st, k + "_ns")  # use_ns: times in nanoseconds
        return attrs

    def readdir(self, path, fh):
        return [".", ".."] + self._call(os.listdir, self._path(path))

    def mkdir(self, path, mode):
        return self._call(os.mkdir, self._path(path), mode)

    def rmdir(self, path):
        return self._call(os.rmdir, self._path(path))

    def unlink(self, path):
        return self._call(os.unlink, self._path(path))

    def rename(self, old, new):
        return self._call(os.rename, self._path(old), self._path(new))

    def link(self, target, source):
        return self._call(os.link, self._path(source), self._path(target))

    def chmod(self, path, mode):
        return self._call(os.chmod, self._path(path), mode)

    def utimens(self, path, times=None):
        return self._call(lambda p: os.utime(p, ns=times) if times else os.utime(p), self._path(path))

    def truncate(self, path, length, fh=None):
        with open(self._path(path), "r+b") as f:
            f.truncate(length)

    def statfs(self, path):
        st = self._call(os.statvfs, self._path(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag",
                "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}

    def open(self, path, flags):
        return self._call(os.open, self._path(path), flags)

    def create(self, path, mode, fi=None):
        return self._call(os.open, self._path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)

    def read(self, path, size, offset, fh):
        return self._call(os.pread, fh, size, offset)

    def write(self, path, data, offset, fh):
        return self._call(os.pwrite, fh, data, offset)

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        return self._call(os.fsync, fh)

    def fsyncdir(self, path, datasync, fh):
        return 0

    def release(self, path, fh):
        return self._call(os.close, fh)


if __name__ == "__main__":
    backing, mountpoint = sys.argv[1], sys.argv[2]
    FUSE(CaseFolding(backing), mountpoint, foreground=True, nothreads=True)
