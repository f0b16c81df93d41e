#!/usr/bin/env python3
"""Checks the durability order of store commits in an `strace -f -y` log.

Image commit (between MARK image-begin and MARK image-end):
  I1 every blob and file object linked into blobs/ or files/ before the one syncfs;
  I2 the syncfs before any write to RocksDB's WAL (index/*.log);
  I3 the WAL synced (fsync/fdatasync of the .log) after its last write.
Single blob commit (between MARK blob-begin and MARK blob-end):
  B1 the staging file synced (fdatasync/fsync) before its link into blobs/;
  B2 the shard directory synced after the link and before the WAL write;
  B3 the WAL synced after its last write.

Usage: durability_check.py TRACE            exit 0 when every rule holds, 1 naming the first
       durability_check.py --mutants TRACE  checks six broken variants of TRACE are each refused
"""
import re
import sys

CALL = re.compile(r'^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((.*)$')


def parse(lines):
    out = []
    for line in lines:
        m = CALL.match(line.strip())
        if not m:
            continue
        out.append((m.group(1), m.group(2), line))
    return out


def segment(calls, begin, end):
    start = stop = None
    for i, (name, args, _) in enumerate(calls):
        if name == 'write' and begin in args:
            start = i
        if name == 'write' and end in args and start is not None:
            stop = i
            break
    if start is None or stop is None:
        raise SystemExit('markers %s/%s not found in the trace' % (begin, end))
    return calls[start:stop]


def first_fd_path(args):
    m = re.match(r'\s*\d+<([^>]*)>', args)
    return m.group(1) if m else ''


def is_wal_write(name, args):
    return name in ('write', 'writev', 'pwrite64', 'pwritev', 'pwritev2') and \
        re.search(r'/index/\d+\.log>', first_fd_path(args) and args.split(',')[0] + '>') is not None


def wal_path(name, args):
    p = first_fd_path(args)
    return p if re.search(r'/index/\d+\.log$', p) else None


def is_link_into(args, where):
    # linkat(AT_FDCWD, "/proc/self/fd/N", DIRFD</.../blobs/sha256/xx>, "hex", ...) or renameat
    return re.search(r'/%s/sha(256|512)/[0-9a-f]{2}>' % where, args) is not None


def check(calls):
    img = segment(calls, 'MARK image-begin', 'MARK image-end')
    syncs = [i for i, (n, a, _) in enumerate(img) if n == 'syncfs']
    if len(syncs) != 1:
        return 'I1: expected one syncfs in the image commit, found %d' % len(syncs)
    s = syncs[0]
    links = [i for i, (n, a, _) in enumerate(img)
             if n in ('linkat', 'renameat', 'renameat2') and
             (is_link_into(a, 'blobs') or is_link_into(a, 'files'))]
    if not links:
        return 'I1: no blob or file object was linked in the image commit'
    late = [i for i in links if i > s]
    if late:
        return 'I1: linked after the syncfs: %s' % img[late[0]][2].strip()
    wal_writes = [i for i, (n, a, _) in enumerate(img)
                  if n in ('write', 'writev', 'pwrite64') and wal_path(n, a)]
    if not wal_writes:
        return 'I2: no WAL write in the image commit'
    if wal_writes[0] < s:
        return 'I2: the WAL was written before the syncfs'
    wal_syncs = [i for i, (n, a, _) in enumerate(img)
                 if n in ('fsync', 'fdatasync') and wal_path(n, a)]
    if not wal_syncs or wal_syncs[-1] < wal_writes[-1]:
        return 'I3: the WAL was not synced after its write'

    blob = segment(calls, 'MARK blob-begin', 'MARK blob-end')
    link = [i for i, (n, a, _) in enumerate(blob)
            if n in ('linkat', 'renameat', 'renameat2') and is_link_into(a, 'blobs')]
    if len(link) != 1:
        return 'B1: expected one link into blobs/, found %d' % len(link)
    link = link[0]
    staged_sync = [i for i, (n, a, _) in enumerate(blob)
                   if n in ('fsync', 'fdatasync') and '/staging' in first_fd_path(a)]
    if not staged_sync or staged_sync[0] > link:
        return 'B1: the staging file was not synced before its link'
    wal_writes = [i for i, (n, a, _) in enumerate(blob)
                  if n in ('write', 'writev', 'pwrite64') and wal_path(n, a)]
    if not wal_writes:
        return 'B3: no WAL write in the blob commit'
    dir_sync = [i for i, (n, a, _) in enumerate(blob)
                if n == 'fsync' and re.search(r'/blobs/sha(256|512)/[0-9a-f]{2}$',
                                              first_fd_path(a))]
    if not dir_sync or not (link < dir_sync[0] < wal_writes[0]):
        return 'B2: the shard directory was not synced between the link and the WAL write'
    wal_syncs = [i for i, (n, a, _) in enumerate(blob)
                 if n in ('fsync', 'fdatasync') and wal_path(n, a)]
    if not wal_syncs or wal_syncs[-1] < wal_writes[-1]:
        return 'B3: the WAL was not synced after its write'
    return None


def mutants(lines):
    """Six traces with one sync removed or moved after the index write."""
    def idx(pred, start_mark, end_mark, last=False):
        inside, found = False, None
        for i, line in enumerate(lines):
            if start_mark in line and 'write(' in line:
                inside = True
            elif end_mark in line and 'write(' in line:
                inside = False
            elif inside and pred(line):
                found = i
                if not last:
                    return i
        return found

    def wal_write(line):
        return re.search(r'(write|writev|pwrite64)\(\d+<[^>]*/index/\d+\.log>', line)

    def wal_sync(line):
        return re.search(r'(fsync|fdatasync)\(\d+<[^>]*/index/\d+\.log>', line)

    def drop(i):
        return lines[:i] + lines[i + 1:]

    def move_after(i, j):
        moved = lines[:i] + lines[i + 1:]
        j = j - 1 if j > i else j
        return moved[:j + 1] + [lines[i]] + moved[j + 1:]

    out = {}
    im, ie = 'MARK image-begin', 'MARK image-end'
    bm, be = 'MARK blob-begin', 'MARK blob-end'
    s = idx(lambda l: re.search(r'\bsyncfs\(', l), im, ie)
    out['image syncfs removed'] = drop(s)
    out['image syncfs after the WAL write'] = move_after(s, idx(wal_write, im, ie, last=True))
    out['image WAL sync removed'] = [l for k, l in enumerate(lines)
                                     if k != idx(wal_sync, im, ie, last=True)]
    f = idx(lambda l: re.search(r'(fsync|fdatasync)\(\d+<[^>]*/staging', l), bm, be)
    out['blob staging fdatasync removed'] = drop(f)
    d = idx(lambda l: re.search(r'fsync\(\d+<[^>]*/blobs/sha256/[0-9a-f]{2}>', l), bm, be)
    out['blob shard fsync removed'] = drop(d)
    out['blob shard fsync after the WAL write'] = move_after(d, idx(wal_write, bm, be, last=True))
    return out


def main():
    args = sys.argv[1:]
    if args and args[0] == '--mutants':
        lines = open(args[1], errors='replace').read().splitlines()
        if check(parse(lines)):
            print('the original trace fails: %s' % check(parse(lines)))
            return 1
        bad = 0
        for name, mutant in mutants(lines).items():
            why = check(parse(mutant))
            print('mutant %-40s %s' % (name + ':', 'refused (' + why + ')' if why else 'PASSED'))
            bad += why is None
        return 1 if bad else 0
    why = check(parse(open(args[0], errors='replace').read().splitlines()))
    if why:
        print('durability: ' + why)
        return 1
    print('durability: every file is synced before the record that names it')
    return 0


if __name__ == '__main__':
    sys.exit(main())
