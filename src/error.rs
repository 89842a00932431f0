//! The one error type of the library. Each variant says what went wrong in words a user
//! understands, with the numbers that matter, and by its kind what the caller should do.

use thiserror::Error;

/// Everything that can go wrong in imgcloud.
#[derive(Debug, Error)]
pub enum Error {
    /// The cover cannot hold the payload; the caller needs a bigger cover.
    #[error(
        "cover too small: it is {width}x{height} and holds {capacity} bytes, but the payload needs {needed} bytes; use a cover of at least {min_pixels} pixels (e.g. {suggest_side}x{suggest_side})"
    )]
    CoverTooSmall {
        width: u32,
        height: u32,
        capacity: usize,
        needed: usize,
        min_pixels: u64,
        suggest_side: u32,
    },
    /// The bytes are not an image in any format we decode.
    #[error("not an image: {0}")]
    NotAnImage(String),
    /// The image file ends early.
    #[error("truncated image: {0}")]
    Truncated(String),
    /// The image is in a format or layout we cannot use.
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// The image carries no imgcloud payload.
    #[error("no hidden payload: this image was not encrypted by imgcloud (or it was re-encoded lossily)")]
    NoPayload,
    /// The payload is there but was changed after it was sealed.
    #[error("tampered payload: the hidden data failed its integrity check ({0})")]
    Tampered(String),
    /// The payload was sealed with a different cluster secret.
    #[error("wrong key: this image was sealed with a different cluster secret")]
    WrongKey,
    /// A request or argument is invalid; fix it and retry.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A peer or client broke the wire protocol; the connection is closed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The cluster cannot serve right now (no quorum, shutting down); retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A deadline passed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A configuration file or flag is wrong.
    #[error("configuration error: {0}")]
    Config(String),
    /// The caller is not allowed to do this (wrong password, not the owner, a replay).
    #[error("refused: {0}")]
    Unauthorized(String),
    /// The node's durable store failed or is damaged.
    #[error("store error: {0}")]
    Storage(String),
    /// A part of the process failed (a task panicked or ended when it must not).
    #[error("internal error: {0}")]
    Internal(String),
    /// An operating-system I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error another process reported (its sentence `message`), as the variant `make`:
    /// when the sentence already starts with that variant's own words ("invalid input: "),
    /// they are not said twice.
    pub fn passed_on(make: fn(String) -> Error, message: String) -> Error {
        let prefix = make(String::new()).to_string();
        match message.strip_prefix(&prefix) {
            Some(rest) if !prefix.is_empty() => make(rest.to_string()),
            _ => make(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 33: a node's "invalid input: ..." came out of the peer as
    /// "invalid input: invalid input: ...".
    #[test]
    fn an_error_passed_on_does_not_repeat_its_kind() {
        let twice = Error::passed_on(Error::InvalidInput, "invalid input: no such user".into());
        assert_eq!(twice.to_string(), "invalid input: no such user");
        let other = Error::passed_on(Error::InvalidInput, "not an image: a.txt".into());
        assert_eq!(other.to_string(), "invalid input: not an image: a.txt");
        let busy = Error::passed_on(Error::Unavailable, "no majority".into());
        assert_eq!(busy.to_string(), "unavailable: no majority");
    }
}
