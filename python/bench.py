"""Random gets and a full scan from Python: mapkv vs py-lmdb vs sqlite3.

    pip install ./python lmdb
    python python/bench.py                         # 1,000,000 entries, 100-byte values
    python python/bench.py --entries 200000 --value-size 4000

Each engine gets the same entries (16-byte keys, random by default or zero-padded
decimal counters with --keys decimal, and values of --value-size random bytes), loaded the fastest way it has and not timed: mapkv's bulk_load, py-lmdb's
putmulti(append=True) in one transaction, one executemany into a WITHOUT ROWID table.
Then, with the file in the page cache, in one read transaction each:

- get: every key once, in a random order (the same order for every engine);
- scan: every entry in key order through a cursor (SELECT ... ORDER BY for sqlite).

"bytes" modes copy each value into a new bytes object. "buffer" modes do not copy, and
both engines are asked the same way, begin(buffers=True): mapkv's get and cursor then
return memoryviews that keep their snapshot alive (as get(key, buffer=True) does, which
costs the parsing of a keyword argument more per call); py-lmdb's return buffers that
are valid only until the transaction's next operation (and crash the interpreter if
used after it ends). sqlite3 has no such mode.

Runs are interleaved across engines (--repeat rounds) so that a busy machine slows all
of them alike; the table shows the median of the rounds.
"""

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time

import mapkv

try:
    import lmdb
except ImportError:  # pragma: no cover - the table then says so
    lmdb = None


def make_keys(n, kind):
    """n distinct 16-byte keys in ascending order: random bytes (like hashes or UUIDs),
    or zero-padded decimal counters (a long prefix shared by every key)."""
    if kind == "decimal":
        return [b"%016d" % i for i in range(n)]
    rng = random.Random(3)
    keys = set()
    while len(keys) < n:
        keys.add(rng.randbytes(16))
    return sorted(keys)


def entries(keys, value_size, seed=1):
    rng = random.Random(seed)
    block = rng.randbytes(value_size + 4096)
    for i, key in enumerate(keys):
        offset = (i * 2654435761) % 4096
        yield key, block[offset : offset + value_size]


class Mapkv:
    name = "mapkv"
    buffers = True

    def __init__(self, directory, keys, value_size):
        self.db = mapkv.open(os.path.join(directory, "bench.mapkv"))
        self.db.bulk_load("main", entries(keys, value_size))

    def get(self, keys, buffer):
        with self.db.begin(buffers=buffer) as txn:
            get = txn.get
            for k in keys:
                get(k)

    def scan(self, buffer):
        n = 0
        with self.db.begin(buffers=buffer) as txn:
            for _k, _v in txn.cursor():
                n += 1
        return n

    def size(self):
        return self.db.stats()["file_size_bytes"]

    def close(self):
        self.db.close()


class Lmdb:
    name = "py-lmdb"
    buffers = True

    def __init__(self, directory, keys, value_size):
        self.env = lmdb.open(
            os.path.join(directory, "bench.lmdb"),
            map_size=1 << 40,
            subdir=True,
            readahead=False,
            metasync=False,
            sync=False,
        )
        with self.env.begin(write=True) as txn:
            txn.cursor().putmulti(entries(keys, value_size), append=True)
        self.env.sync(True)

    def get(self, keys, buffer):
        with self.env.begin(buffers=buffer) as txn:
            get = txn.get
            for k in keys:
                get(k)

    def scan(self, buffer):
        n = 0
        with self.env.begin(buffers=buffer) as txn:
            for _k, _v in txn.cursor():
                n += 1
        return n

    def size(self):
        return self.env.info()["last_pgno"] * self.env.stat()["psize"]

    def close(self):
        self.env.close()


class Sqlite:
    name = "sqlite3"
    buffers = False

    def __init__(self, directory, keys, value_size):
        self.con = sqlite3.connect(os.path.join(directory, "bench.sqlite"))
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=OFF")
        self.con.execute("PRAGMA cache_size=-262144")  # 256 MiB
        self.con.execute("PRAGMA mmap_size=68719476736")
        self.con.execute("CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")
        with self.con:
            self.con.executemany("INSERT INTO t VALUES (?, ?)", entries(keys, value_size))

    def get(self, keys, buffer):
        cur = self.con.cursor()
        query = "SELECT v FROM t WHERE k = ?"
        cur.execute("BEGIN")
        for k in keys:
            cur.execute(query, (k,)).fetchone()
        cur.execute("COMMIT")

    def scan(self, buffer):
        n = 0
        for _k, _v in self.con.execute("SELECT k, v FROM t ORDER BY k"):
            n += 1
        return n

    def size(self):
        return self.con.execute("PRAGMA page_count").fetchone()[0] * 4096

    def close(self):
        self.con.close()


def timed(f):
    start = time.perf_counter()
    r = f()
    return time.perf_counter() - start, r


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--keys", choices=["random", "decimal"], default="random")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the databases go (default: a temp dir)")
    args = parser.parse_args()

    n = args.entries
    directory = tempfile.mkdtemp(prefix="mapkv-bench-", dir=args.dir)
    engines = [Mapkv, Lmdb, Sqlite] if lmdb else [Mapkv, Sqlite]
    if not lmdb:
        print("py-lmdb is not installed (pip install lmdb): it is left out")
    print(
        f"{n:,} entries, 16-byte {args.keys} keys, {args.value_size}-byte values, in {directory}"
    )
    try:
        keys = make_keys(n, args.keys)
        opened = []
        for engine in engines:
            took, db = timed(lambda: engine(directory, keys, args.value_size))
            print(f"  loaded {engine.name} in {took:.1f} s ({db.size() / 2**20:.0f} MiB)")
            opened.append(db)
        random.Random(2).shuffle(keys)
        results = {(db.name, what): [] for db in opened for what in MODES}
        for round_ in range(args.repeat):
            for db in opened:
                for what in MODES:
                    kind, buffer = what
                    if buffer and not db.buffers:
                        continue
                    if kind == "get":
                        took, r = timed(lambda: db.get(keys, buffer))
                    else:
                        took, r = timed(lambda: db.scan(buffer))
                    if kind == "scan" and r != n:
                        raise SystemExit(f"{db.name} scanned {r} entries, not {n}")
                    results[(db.name, what)].append(n / took)
            print(f"  round {round_ + 1} of {args.repeat} done")
        report(results, [db.name for db in opened])
        for db in opened:
            db.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


MODES = [("get", False), ("get", True), ("scan", False), ("scan", True)]


def report(results, names):
    def rate(name, what):
        runs = results.get((name, what)) or []
        return statistics.median(runs) if runs else None

    print()
    print("| operation | mode | " + " | ".join(names) + " | mapkv ÷ py-lmdb |")
    print("|---|---|" + "---|" * len(names) + "---|")
    for what in MODES:
        kind, buffer = what
        cells = []
        for name in names:
            r = rate(name, what)
            cells.append(f"{r / 1e6:.2f} M/s" if r else "n/a")
        m, l = rate("mapkv", what), rate("py-lmdb", what)
        ratio = f"{m / l:.2f}" if m and l else "n/a"
        mode = "buffer" if buffer else "bytes"
        print(f"| {kind} | {mode} | " + " | ".join(cells) + f" | {ratio} |")
    m, l = rate("mapkv", ("get", True)), rate("py-lmdb", ("get", False))
    if m and l:
        print(f"\nmapkv get with buffer=True ÷ py-lmdb get with bytes: {m / l:.2f}")


if __name__ == "__main__":
    main()
