//! Request-level errors and the one table that maps them to stable codes and HTTP statuses.

/// What went wrong with a request as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body is not valid JSON.
    BadJson,
    /// Valid JSON of the wrong shape.
    BadRequest,
    /// A batch with no messages.
    EmptyBatch,
    /// Nested deeper than allowed.
    TooDeep,
    /// Larger than allowed (before or after decompression).
    TooLarge,
    /// The gzip/deflate stream is damaged.
    BadEncoding,
    /// A `Content-Encoding` Niyet does not speak.
    UnsupportedEncoding,
    /// Every message of the request was invalid (they are quarantined or rejected).
    InvalidMessages,
}

impl ErrorKind {
    /// The stable string clients can match on.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadJson => "invalid_json",
            ErrorKind::BadRequest => "invalid_request",
            ErrorKind::EmptyBatch => "empty_batch",
            ErrorKind::TooDeep => "too_deep",
            ErrorKind::TooLarge => "payload_too_large",
            ErrorKind::BadEncoding => "invalid_encoding",
            ErrorKind::UnsupportedEncoding => "unsupported_encoding",
            ErrorKind::InvalidMessages => "invalid_messages",
        }
    }

    /// The HTTP status for it.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::TooLarge => 413,
            ErrorKind::UnsupportedEncoding => 415,
            _ => 400,
        }
    }
}

/// A request-level error with a message that names the problem and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IngestError {
    /// Which kind.
    pub kind: ErrorKind,
    /// For people.
    pub message: String,
}

impl IngestError {
    /// Builds one.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}
