//! The library's error type.
//!
//! Every error names *where* (a file or a parameter), *what* (a field) and
//! what was expected, so the CLI can print it as one line and exit with
//! status 2. Numerical code never panics on user input: it returns one of
//! these instead.

use std::path::Path;

/// Errors raised by kktcert's library functions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, written or parsed as a whole.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it, and what was expected.
        msg: String,
    },
    /// The operating system refused an operation on a file (the file is
    /// missing, unreadable, or the disk is full); `source` says which.
    #[error("{path}: cannot {action}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What was attempted: "read", "write", "list", …
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A problem too large for the memory available: refused before the
    /// allocation, so the process never aborts.
    #[error("invalid parameter `memory`: {what} needs about {need} but {available} is available; {instead}")]
    OutOfMemory {
        /// The computation refused.
        what: String,
        /// Its estimated peak memory, human-readable.
        need: String,
        /// The memory available (or `KKTCERT_MEMORY_LIMIT`).
        available: String,
        /// What the user can do instead.
        instead: String,
    },
    /// A field inside a file (a tensor, a JSON key) has the wrong content.
    #[error("{path}: field `{field}`: {msg}")]
    Field {
        /// The file.
        path: String,
        /// The tensor or key inside it.
        field: String,
        /// What is wrong with it, and what was expected.
        msg: String,
    },
    /// A user-supplied parameter is out of range.
    #[error("invalid parameter `{name}`: {msg}")]
    Param {
        /// The parameter's name (as the CLI flag, without dashes).
        name: String,
        /// The value given, and what was expected.
        msg: String,
    },
    /// Two inputs disagree (e.g. input dimension of a net and of a dataset).
    #[error("mismatch: {0}")]
    Mismatch(String),
    /// A numerical procedure could not produce a result it can vouch for.
    #[error("{0}")]
    Numerical(String),
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Constructors that fill in the location; the CLI and the Python bindings
/// use them too.
impl Error {
    /// A whole-file error on `path`.
    pub fn file(path: &Path, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.display().to_string(),
            msg: msg.into(),
        }
    }

    /// An operating-system error on `path` while attempting `action`.
    pub fn io(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            action,
            source,
        }
    }

    /// An error in field `field` of the file `path`.
    pub fn field(path: &Path, field: &str, msg: impl Into<String>) -> Self {
        Error::Field {
            path: path.display().to_string(),
            field: field.to_string(),
            msg: msg.into(),
        }
    }

    /// A parameter `name` out of range.
    pub fn param(name: &str, msg: impl Into<String>) -> Self {
        Error::Param {
            name: name.to_string(),
            msg: msg.into(),
        }
    }
}
