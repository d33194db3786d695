use std::fmt;

/// The one error type of the kernel crates. Every message names what was wrong; match on
/// the kind to tell a caller's mistake (a shape, an argument) from a resource limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two things that must agree do not: `what` names them.
    #[error("{what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// What was compared (a buffer, a shape, a layout).
        what: String,
        /// What it had to be.
        expected: String,
        /// What it was.
        got: String,
    },
    /// An argument that is invalid on its own (zero size, kernel larger than the input, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A size whose arithmetic does not fit in `usize`.
    #[error("size overflow: {0}")]
    Overflow(String),
    /// An allocation the system refused: the message says how much was asked for.
    #[error("out of memory: could not allocate {0}")]
    OutOfMemory(String),
}

impl Error {
    /// A [`Error::ShapeMismatch`]: `what` expected `expected` and got `got`.
    pub fn mismatch(what: impl Into<String>, expected: impl fmt::Display, got: impl fmt::Display) -> Self {
        Error::ShapeMismatch { what: what.into(), expected: expected.to_string(), got: got.to_string() }
    }

    /// An [`Error::InvalidArgument`] with `msg`.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// An [`Error::Overflow`] with `msg`.
    pub fn overflow(msg: impl Into<String>) -> Self {
        Error::Overflow(msg.into())
    }

    /// An [`Error::OutOfMemory`]: `msg` says how much was asked for.
    pub fn out_of_memory(msg: impl Into<String>) -> Self {
        Error::OutOfMemory(msg.into())
    }
}

/// The result of every fallible kernel call.
pub type Result<T> = std::result::Result<T, Error>;

/// Product of sizes with overflow reported as an error naming `what`.
pub fn checked_product(what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d).ok_or_else(|| Error::overflow(format!("{what} {dims:?} has more than usize::MAX elements")))
    })
}
