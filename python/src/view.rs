//! Zero-copy `memoryview`s of a snapshot's bytes that keep the snapshot alive.
//!
//! A view returned by `get(..., buffer=True)` is a `memoryview` whose exporter (its
//! `obj`) is the transaction's `SnapshotOwner`: a small object, one per read
//! transaction, holding a strong reference to the [`Snapshot`] (the mapkv read
//! transaction). The memoryview holds the owner, the owner holds the snapshot, and mapkv
//! keeps every page that a live snapshot can reach unchanged (mapped pages are never
//! written while a snapshot reaches them; pread buffers belong to the transaction until
//! it drops). So the bytes stay valid, and equal to what `get` found, for as long as any
//! view of them exists, whatever became of the transaction object, its cursors or the
//! database object that made them. A view that its holder `release()`d raises Python's
//! own `ValueError`.
//!
//! The buffer protocol gives the exporter no say in which bytes it exports, so
//! [`Exporter::view`] leaves the value's address and its owner in a thread-local slot
//! (`PENDING`) just for the one `PyMemoryView_FromObject` call that asks for them. One
//! owner for all of a transaction's views, rather than one per view, saves an object and
//! two atomic reference-count changes on every zero-copy read.
//!
//! PyO3 implements `__getbuffer__` only where the buffer protocol is in the limited API
//! (CPython 3.11 and later), and the extension is built for the stable ABI of 3.9, so the
//! owner's type is made here with `PyType_FromSpec` and the `Py_bf_getbuffer` slot.
//! CPython accepts buffer slots in type specs since 3.9 (bpo-40724) and made them, and
//! the `Py_buffer` layout they use, part of the stable ABI in 3.11 without a change.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::ptr;
use std::sync::Arc;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyMemoryView, PyType};

use crate::read::Snapshot;

/// CPython's `Py_buffer` (Include/pybuffer.h): one layout in every CPython 3 release,
/// declared in the stable ABI since 3.11 (pyo3-ffi offers it only there).
#[repr(C)]
struct PyBuffer {
    buf: *mut c_void,
    obj: *mut ffi::PyObject,
    len: ffi::Py_ssize_t,
    itemsize: ffi::Py_ssize_t,
    readonly: c_int,
    ndim: c_int,
    format: *mut c_char,
    shape: *mut ffi::Py_ssize_t,
    strides: *mut ffi::Py_ssize_t,
    suboffsets: *mut ffi::Py_ssize_t,
    internal: *mut c_void,
}
#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<PyBuffer>() == 80);

// Request flags (Include/pybuffer.h).
const PYBUF_WRITABLE: c_int = 0x0001;
const PYBUF_FORMAT: c_int = 0x0004;
const PYBUF_ND: c_int = 0x0008;
const PYBUF_STRIDES: c_int = 0x0010 | PYBUF_ND;

/// The exporter of a snapshot's views. Never made from Python (`tp_new` refuses),
/// only by [`Exporter::new`], which fills every field before anything else sees it.
#[repr(C)]
struct SnapshotOwner {
    ob_base: ffi::PyObject,
    /// A strong reference from `Arc::into_raw`, released by `dealloc`.
    snapshot: *const Snapshot,
}

/// The export that `Exporter::view` asked for: the bytes, and the owner whose snapshot
/// keeps them valid. Thread-local, so that which bytes a view gets never depends on what
/// the interpreter may run inside `PyMemoryView_FromObject` (a garbage collection there
/// runs finalizers, which can make views themselves and let other threads run); on one
/// thread such nested views nest properly, and each restores what it found.
#[derive(Clone, Copy)]
struct Pending {
    owner: *const ffi::PyObject,
    bytes: *const u8,
    len: usize,
}

const NO_EXPORT: Pending = Pending {
    owner: ptr::null(),
    bytes: ptr::null(),
    len: 0,
};

thread_local! {
    static PENDING: std::cell::Cell<Pending> = const { std::cell::Cell::new(NO_EXPORT) };
}

static OWNER_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

const OWNER_DOC: &std::ffi::CStr = c"The exporter of a mapkv read transaction's \
memoryviews: it keeps the snapshot that holds their bytes alive while any of them exists.";

/// Makes the owner type; called once, at module initialisation.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let ty = OWNER_TYPE.get_or_try_init(m.py(), || make_owner_type(m.py()))?;
    m.add("SnapshotOwner", ty.bind(m.py()))
}

fn make_owner_type(py: Python<'_>) -> PyResult<Py<PyType>> {
    let mut slots = [
        ffi::PyType_Slot {
            slot: ffi::Py_bf_getbuffer,
            pfunc: getbuffer as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_dealloc,
            pfunc: dealloc as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_new,
            pfunc: refuse_new as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_doc,
            pfunc: OWNER_DOC.as_ptr() as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: 0,
            pfunc: ptr::null_mut(),
        },
    ];
    let mut spec = ffi::PyType_Spec {
        // Static: CPython before 3.12 keeps this pointer as the type's tp_name.
        name: c"mapkv.SnapshotOwner".as_ptr(),
        basicsize: size_of::<SnapshotOwner>() as c_int,
        itemsize: 0,
        flags: ffi::Py_TPFLAGS_DEFAULT as c_uint,
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: `spec` and `slots` are valid for the call (CPython copies what it keeps,
    // except the static name); each slot's function has the signature CPython calls it
    // with (getbufferproc, destructor, newfunc) and the doc is a static C string.
    let ty = unsafe { ffi::PyType_FromSpec(&mut spec) };
    // SAFETY: `PyType_FromSpec` returns a new reference to a type, or null with an
    // exception set.
    let ty = unsafe { Bound::from_owned_ptr_or_err(py, ty)? };
    Ok(ty.cast_into::<PyType>()?.unbind())
}

/// A `SnapshotOwner`: what makes a read transaction's zero-copy views.
pub(crate) struct Exporter(Py<PyAny>);

impl Exporter {
    /// An owner holding a strong reference to `snapshot`.
    pub(crate) fn new(py: Python<'_>, snapshot: &Arc<Snapshot>) -> PyResult<Exporter> {
        let ty = OWNER_TYPE
            .get(py)
            .expect("the module made the owner type when it was imported")
            .bind(py);
        // SAFETY: `ty` is a live type object whose instances are `SnapshotOwner`s
        // (`basicsize`); `PyType_GenericAlloc` returns a new zero-filled instance holding
        // a reference to its type, or null with an exception set.
        let obj = unsafe {
            Bound::from_owned_ptr_or_err(py, ffi::PyType_GenericAlloc(ty.as_ptr().cast(), 0))?
        };
        let owner = obj.as_ptr().cast::<SnapshotOwner>();
        // SAFETY: `owner` is the fresh object just allocated, with room for a
        // `SnapshotOwner` and no other reference to it yet; the fields are plain data,
        // so writing them over the zeros drops nothing.
        unsafe {
            (*owner).snapshot = Arc::into_raw(Arc::clone(snapshot));
        }
        Ok(Exporter(obj.unbind()))
    }

    pub(crate) fn clone_ref(&self, py: Python<'_>) -> Exporter {
        Exporter(self.0.clone_ref(py))
    }

    /// A read-only `memoryview` of `bytes` that keeps this owner, and so its snapshot,
    /// alive while it (or any view, slice or array made from it) lives.
    ///
    /// # Safety
    /// `bytes` must have been returned by this owner's snapshot's transaction: mapkv
    /// keeps those valid and unchanged until the transaction drops, which the owner
    /// prevents while it lives.
    pub(crate) unsafe fn view<'py>(
        &self,
        py: Python<'py>,
        bytes: &[u8],
    ) -> PyResult<Bound<'py, PyAny>> {
        let saved = PENDING.replace(Pending {
            owner: self.0.as_ptr(),
            bytes: bytes.as_ptr(),
            len: bytes.len(),
        });
        let view = PyMemoryView::from(self.0.bind(py));
        PENDING.set(saved);
        Ok(view?.into_any())
    }
}

/// `bf_getbuffer`: what `PyBuffer_FillInfo` fills for a read-only byte buffer.
unsafe extern "C" fn getbuffer(
    obj: *mut ffi::PyObject,
    view: *mut PyBuffer,
    flags: c_int,
) -> c_int {
    let refuse = |message: &std::ffi::CStr| {
        // SAFETY: called with the GIL held (CPython calls bf_getbuffer so); the
        // exception type is a static CPython object and the message a C string. `view`
        // is written only when it is not null, as the protocol asks on failure.
        unsafe {
            if !view.is_null() {
                (*view).obj = ptr::null_mut();
            }
            ffi::PyErr_SetString(ffi::PyExc_BufferError, message.as_ptr());
        }
        -1
    };
    if view.is_null() {
        return refuse(c"mapkv.SnapshotOwner: a buffer request without a view");
    }
    // Only the export that `Exporter::view` prepared on this thread, for this owner:
    // its bytes are valid while this owner (which the view will hold) lives.
    let pending = PENDING.get();
    if pending.owner != obj.cast_const() {
        return refuse(
            c"a mapkv snapshot exports values only through get(buffer=True) and cursors",
        );
    }
    PENDING.set(NO_EXPORT);
    let (bytes, len) = (pending.bytes, pending.len);
    if flags & PYBUF_WRITABLE != 0 {
        return refuse(c"mapkv values are read-only");
    }
    // SAFETY: `view` is the caller's buffer struct (not null, checked above) for us to
    // fill. `shape` and `strides` point into the struct itself, as
    // `PyBuffer_FillInfo` makes them. The new reference to `obj` is what the view keeps
    // and `PyBuffer_Release` drops: it keeps the owner, and so the snapshot that keeps
    // `bytes` valid (`Exporter::view`'s contract), alive while the view exists.
    unsafe {
        (*view).buf = bytes.cast_mut().cast();
        ffi::Py_INCREF(obj);
        (*view).obj = obj;
        (*view).len = len as ffi::Py_ssize_t;
        (*view).itemsize = 1;
        (*view).readonly = 1;
        (*view).ndim = 1;
        (*view).format = if flags & PYBUF_FORMAT != 0 {
            c"B".as_ptr().cast_mut()
        } else {
            ptr::null_mut()
        };
        (*view).shape = if flags & PYBUF_ND != 0 {
            &raw mut (*view).len
        } else {
            ptr::null_mut()
        };
        (*view).strides = if flags & PYBUF_STRIDES == PYBUF_STRIDES {
            &raw mut (*view).itemsize
        } else {
            ptr::null_mut()
        };
        (*view).suboffsets = ptr::null_mut();
        (*view).internal = ptr::null_mut();
    }
    0
}

/// `tp_dealloc`: releases the snapshot, frees the object and its reference to its type.
unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    let owner = obj.cast::<SnapshotOwner>();
    // SAFETY: CPython calls tp_dealloc once, with the GIL held, when the last reference
    // to this `SnapshotOwner` is gone: no view of its snapshot's bytes remains (each view
    // holds a reference). `snapshot` came from `Arc::into_raw` in `Exporter::new` (or is
    // null in a zeroed instance), so it is released exactly once here. The object is then freed with its type's
    // tp_free, and the reference every heap type's instance holds to its type dropped
    // after, as heap types' deallocators must.
    unsafe {
        let snapshot = (*owner).snapshot;
        (*owner).snapshot = ptr::null();
        if !snapshot.is_null() {
            drop(Arc::from_raw(snapshot));
        }
        let ty = ffi::Py_TYPE(obj);
        let free = ffi::PyType_GetSlot(ty, ffi::Py_tp_free);
        let free: Option<ffi::freefunc> = std::mem::transmute(free);
        match free {
            Some(free) => free(obj.cast()),
            None => ffi::PyObject_Free(obj.cast()),
        }
        ffi::Py_DECREF(ty.cast());
    }
}

/// `tp_new`: owners are made only by `Exporter::new`.
unsafe extern "C" fn refuse_new(
    _ty: *mut ffi::PyTypeObject,
    _args: *mut ffi::PyObject,
    _kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: called by CPython with the GIL held; static exception type, C string.
    unsafe {
        ffi::PyErr_SetString(
            ffi::PyExc_TypeError,
            c"mapkv.SnapshotOwner cannot be made from Python".as_ptr(),
        );
    }
    ptr::null_mut()
}
