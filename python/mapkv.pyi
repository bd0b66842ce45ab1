"""mapkv: an embedded key-value database (a copy-on-write B-tree over a memory-mapped
file), in py-lmdb's habits, with zero-copy values that cannot dangle."""

import os
import pathlib
from types import TracebackType
from typing import Any, Iterator, Literal, Optional, Tuple, Type, TypeVar, Union, final, overload

__version__: str

#: The tree that ``tree=None`` names. It reads as empty until it exists; any other
#: tree that does not exist raises ``TreeNotFound``.
DEFAULT_TREE: str

#: Anything with the buffer protocol: bytes (read in place), bytearray, memoryview,
#: numpy arrays... (copied once). ``str`` and ``int`` are ``TypeError``.
#: Stub-only aliases, private: the module has no such names at run time.
_BytesLike = Union[bytes, bytearray, memoryview, Any]
_Durability = Literal["immediate", "none"]
_T = TypeVar("_T")

class Error(Exception):
    """Base class of every error mapkv reports, but for I/O errors, which are OSError."""

class Corrupted(Error):
    page: int
    reason: str

class Locked(Error): ...
class ReadOnly(Error): ...

class KeyTooLarge(Error):
    size: int
    max: int

class ValueTooLarge(Error):
    size: int
    max: int

class TreeNotFound(Error):
    name: str

class TreeNotEmpty(Error):
    name: str

class Unsorted(Error):
    index: int

class InvalidOptions(Error): ...

def open(
    path: Union[str, os.PathLike[str]],
    *,
    page_size: Optional[int] = None,
    mmap_size: Optional[int] = None,
    cache_size: Optional[int] = None,
    read_ahead: bool = True,
    durability: Optional[_Durability] = None,
    readonly: bool = False,
) -> Database:
    """Opens (creating if missing, unless ``readonly``) the database file at ``path``.

    ``page_size``: a power of two from 4096 to 65536, fixed when the file is made.
    ``mmap_size``: bytes of the file read through the memory map, the rest with pread
    (None: the whole file; 0: no map). ``cache_size``: bytes of pread pages kept between
    transactions. ``read_ahead=False``: advise the kernel that reads are random (a file
    larger than memory read at random). ``durability``: "immediate" (default) or "none".
    Raises ``Locked``,
    ``InvalidOptions`` or ``OSError``.
    """

@final
class Database:
    """An open database file. Use from any threads; close() or a ``with`` block ends it
    (the file closes once its transactions, cursors and memoryviews are gone too)."""

    @property
    def path(self) -> pathlib.Path: ...
    @property
    def closed(self) -> bool: ...
    @overload
    def begin(
        self, write: Literal[False] = False, *, buffers: bool = False, durability: None = None
    ) -> ReadTransaction: ...
    @overload
    def begin(
        self, write: Literal[True], *, buffers: bool = False, durability: Optional[_Durability] = None
    ) -> WriteTransaction:
        """The write transaction: waits, without the GIL, while another thread has it;
        Ctrl-C ends the wait with ``KeyboardInterrupt``."""
    @overload
    def begin(
        self, write: bool = False, *, buffers: bool = False, durability: Optional[_Durability] = None
    ) -> Union[ReadTransaction, WriteTransaction]: ...
    def bulk_load(self, tree: str, entries: Any) -> dict[str, Any]:
        """Loads an iterable of ``(key, value)`` tuples with strictly ascending keys into an
        absent or empty tree, durably. Returns ``entries``, ``pages``, ``bytes_written``,
        ``direct_io``, ``direct_io_refused``, ``elapsed_s``. Raises ``Unsorted``,
        ``TreeNotEmpty`` or what the iterable raised, leaving the database unchanged."""
    def check(self) -> dict[str, int]:
        """Verifies every reachable page; returns ``trees``, ``entries``, ``node_pages``,
        ``overflow_pages``, ``free_pages``, ``data_pages``. Raises ``Corrupted``."""
    def stats(self) -> dict[str, Any]:
        """``page_size``, ``file_size_bytes``, ``page_count``, ``pages_in_use``,
        ``pages_free``, ``free_runs``, ``txn_id``, ``oldest_reader_txn_age``, the counters
        since the open ``commits``, ``pages_written``, ``syncs``, and ``trees`` (a list of
        dicts with ``name``, ``entries``, ``depth``)."""
    def compact_to(self, path: Union[str, os.PathLike[str]]) -> None:
        """Writes a compacted copy of the newest commit to ``path`` (which must not exist)."""
    def compact(self) -> dict[str, int]:
        """Compacts the file in place (readers may run); returns ``leaves_merged``,
        ``pages_moved``, ``passes``, ``file_size_before``, ``file_size_after``. Raises if this thread holds
        the write transaction."""
    def tree_names(self) -> list[str]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Database: ...
    def __exit__(self, *args: Any) -> bool: ...

@final
class ReadTransaction:
    """A consistent snapshot. Memoryviews it returns stay valid after it ends."""

    @overload
    def get(self, key: _BytesLike) -> Union[bytes, memoryview, None]: ...
    @overload
    def get(
        self, key: _BytesLike, default: _T, *, tree: Optional[str] = None, buffer: Optional[bool] = None
    ) -> Union[bytes, memoryview, _T]: ...
    @overload
    def get(
        self, key: _BytesLike, *, tree: Optional[str] = None, buffer: Optional[bool] = None
    ) -> Union[bytes, memoryview, None]: ...
    def cursor(self, tree: Optional[str] = None, *, buffer: Optional[bool] = None) -> Cursor: ...
    def len(self, tree: Optional[str] = None) -> int: ...
    def tree_names(self) -> list[str]: ...
    def commit(self) -> None:
        """Ends the transaction (the same as abort())."""
    def abort(self) -> None: ...
    def __enter__(self) -> ReadTransaction: ...
    def __exit__(self, *args: Any) -> bool: ...

@final
class WriteTransaction:
    """The one write transaction. A ``with`` block commits on success and aborts on an
    exception. It may be used and ended on any thread. Reads here are copies."""

    def get(
        self,
        key: _BytesLike,
        default: Any = None,
        *,
        tree: Optional[str] = None,
        buffer: Optional[bool] = None,
    ) -> Any: ...
    def put(
        self, key: _BytesLike, value: _BytesLike, *, tree: Optional[str] = None, append: bool = False
    ) -> None:
        """Stores ``value`` under ``key``. ``append=True``: ``key`` must sort after every
        key of the tree (pages are then filled completely); raises ``Unsorted`` if not."""
    def replace(
        self, key: _BytesLike, value: _BytesLike, *, tree: Optional[str] = None
    ) -> Optional[bytes]:
        """Stores ``value`` under ``key``; returns the value it replaced, or None."""
    def pop(self, key: _BytesLike, default: Any = None, *, tree: Optional[str] = None) -> Any:
        """Removes ``key``; returns its value, or ``default`` if it was absent."""
    def delete(self, key: _BytesLike, *, tree: Optional[str] = None) -> bool: ...
    def delete_range(
        self,
        start: Optional[_BytesLike] = None,
        end: Optional[_BytesLike] = None,
        *,
        tree: Optional[str] = None,
    ) -> int:
        """Removes every key ``start <= k < end`` (None: unbounded); returns the count."""
    def delete_tree(self, name: str) -> bool: ...
    def cursor(self, tree: Optional[str] = None, *, buffer: Optional[bool] = None) -> Cursor: ...
    def len(self, tree: Optional[str] = None) -> int: ...
    def tree_names(self) -> list[str]: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...
    def __enter__(self) -> WriteTransaction: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> bool: ...

@final
class Cursor:
    """A position in one tree. Moves return whether the cursor stands on an entry.

    Once its transaction ended, every method but ``close`` raises ``ValueError``; a read
    transaction's end closes its cursors, so that they no longer hold its snapshot."""

    def first(self) -> bool: ...
    def last(self) -> bool: ...
    def set_range(self, key: _BytesLike) -> bool: ...
    def set_key(self, key: _BytesLike) -> bool: ...
    def next(self) -> bool: ...
    def prev(self) -> bool: ...
    def key(self) -> bytes: ...
    def value(self) -> Union[bytes, memoryview]: ...
    def item(self) -> Tuple[bytes, Union[bytes, memoryview]]: ...
    def iternext(self, keys: bool = True, values: bool = True) -> CursorIter: ...
    def iterprev(self, keys: bool = True, values: bool = True) -> CursorIter: ...
    def __iter__(self) -> CursorIter: ...
    def close(self) -> None: ...
    def __enter__(self) -> Cursor: ...
    def __exit__(self, *args: Any) -> bool: ...

@final
class CursorIter(Iterator[Any]):
    def __iter__(self) -> CursorIter: ...
    def __next__(self) -> Any: ...

@final
class SnapshotOwner:
    """The exporter (``memoryview.obj``) of a read transaction's zero-copy values: it
    keeps their snapshot alive. Not made from Python."""
