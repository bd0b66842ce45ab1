//! I/O errors that name the file they concern: "opening /x/y/db: No such file or
//! directory (os error 2)" where the operating system says only the second half.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::Error;

/// What was being done to which path when the operating system's error `source` came.
/// It travels inside an `io::Error` of the same kind, so callers that match on
/// `ErrorKind` see no difference, and `source()` of that `io::Error` is the original.
#[derive(Debug)]
struct PathError {
    action: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The source's text is repeated here: `Error::Io` displays only this error.
        write!(
            f,
            "{} {}: {}",
            self.action,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A `map_err` adapter: `Error::Io` of `source`'s kind that says "`action` `path`: …".
/// An error that already names a path (the innermost, most precise one) is kept as is.
pub(crate) fn at(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    move |source| {
        if source.get_ref().is_some_and(|e| e.is::<PathError>()) {
            return Error::Io(source);
        }
        let kind = source.kind();
        let path = path.to_path_buf();
        Error::Io(io::Error::new(
            kind,
            PathError {
                action,
                path,
                source,
            },
        ))
    }
}

/// [`at`] for a `Result` of the crate: its `Error::Io` gains the path, other errors pass.
pub(crate) fn name_path(action: &'static str, path: &Path) -> impl FnOnce(Error) -> Error {
    move |e| match e {
        Error::Io(source) => at(action, path)(source),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_path_keeps_the_kind_and_the_source_and_does_not_nest() {
        let os = io::Error::from_raw_os_error(rustix::io::Errno::NOENT.raw_os_error());
        let Error::Io(e) = at("opening", Path::new("/x/y/db"))(os) else {
            unreachable!("at gives Error::Io")
        };
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().starts_with("opening /x/y/db: "), "{e}");
        let source = std::error::Error::source(&e).expect("the OS error");
        let source = source.downcast_ref::<io::Error>().expect("an io::Error");
        assert_eq!(
            source.raw_os_error(),
            Some(rustix::io::Errno::NOENT.raw_os_error())
        );
        let Error::Io(again) = name_path("locking", Path::new("/elsewhere"))(Error::Io(e)) else {
            unreachable!("name_path keeps Error::Io")
        };
        assert!(
            again.to_string().starts_with("opening /x/y/db: "),
            "{again}"
        );
        assert!(matches!(
            name_path("opening", Path::new("/x"))(Error::Locked),
            Error::Locked
        ));
    }
}
