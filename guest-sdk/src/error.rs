//! The errors a plugin returns to the host, and the error of the typed state
//! helpers.

use crate::Rejection;

/// Why `apply` kept nothing (mirrors the WIT `apply-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// The logic refused the event.
    Rejected(Rejection),
    /// The input could not be understood: an undecodable payload or entry.
    Invalid(String),
}

impl ApplyError {
    /// Shorthand for `ApplyError::Rejected(Rejection::new(code, message))`.
    pub fn rejected(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Rejected(Rejection::new(code, message))
    }

    /// Shorthand for `ApplyError::Invalid(message)`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

impl From<Rejection> for ApplyError {
    fn from(r: Rejection) -> Self {
        Self::Rejected(r)
    }
}

impl From<StateError> for ApplyError {
    fn from(e: StateError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl core::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Rejected(r) => write!(f, "rejected: {r}"),
            Self::Invalid(m) => write!(f, "invalid: {m}"),
        }
    }
}

impl std::error::Error for ApplyError {}

/// Why `apply-batch` stopped (mirrors the WIT `batch-error`): none of the
/// batch's writes are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// Index of the failing event in the batch.
    pub index: u32,
    /// What went wrong with it.
    pub error: ApplyError,
}

impl core::fmt::Display for BatchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "event {} of the batch: {}", self.index, self.error)
    }
}

impl std::error::Error for BatchError {}

/// An error of the typed state helpers ([`crate::Item`], [`crate::Map`],
/// [`crate::whole`]).
///
/// It converts into [`ApplyError::Invalid`] (and into a `String` for `init`,
/// `migrate` and `query`) with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateError {
    /// `load` found no entry.
    NotFound {
        /// Namespace of the item or map.
        namespace: &'static str,
        /// Encoded key within the namespace (empty for an item).
        key: Vec<u8>,
    },
    /// An entry (its value, or its key during a range) could not be decoded.
    Decode {
        /// Namespace of the item or map.
        namespace: &'static str,
        /// Encoded key within the namespace (empty for an item).
        key: Vec<u8>,
        /// What the decoder said.
        message: String,
    },
    /// A value could not be encoded (a serde type postcard cannot write,
    /// such as a sequence of unknown length).
    Encode {
        /// Namespace of the item or map.
        namespace: &'static str,
        /// Encoded key within the namespace (empty for an item).
        key: Vec<u8>,
        /// What the encoder said.
        message: String,
    },
}

struct Entry<'a>(&'static str, &'a [u8]);

impl core::fmt::Display for Entry<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.1.is_empty() {
            write!(f, "{:?}", self.0)
        } else {
            write!(f, "{:?}[\"{}\"]", self.0, self.1.escape_ascii())
        }
    }
}

impl core::fmt::Display for StateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotFound { namespace, key } => {
                write!(f, "no entry at {}", Entry(namespace, key))
            }
            Self::Decode {
                namespace,
                key,
                message,
            } => write!(f, "cannot decode {}: {message}", Entry(namespace, key)),
            Self::Encode {
                namespace,
                key,
                message,
            } => write!(f, "cannot encode {}: {message}", Entry(namespace, key)),
        }
    }
}

impl std::error::Error for StateError {}

impl From<StateError> for String {
    fn from(e: StateError) -> Self {
        e.to_string()
    }
}
