//! What can go wrong, how it is shown, and the exit code scripts see.

use std::fmt::Write as _;

use tonic::{Code, Status};

/// Exit codes, as documented in `leadctl --help`.
pub(crate) mod exit {
    /// A usage or local error: bad flags, an unreadable or invalid file, a bad CSV.
    pub(crate) const LOCAL: u8 = 1;
    /// Partial failure: an import with rejected rows.
    pub(crate) const PARTIAL: u8 = 2;
    /// The server refused the request: invalid argument, failed precondition, not found, exists.
    pub(crate) const INVALID: u8 = 3;
    /// The server is unavailable, too slow, or failed.
    pub(crate) const SERVER: u8 = 4;
    /// The API key is missing, wrong, or not allowed.
    pub(crate) const AUTH: u8 = 5;
}

/// A failed command.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Something wrong on this side (a file, a flag, a CSV), with its explanation.
    Local(String),
    /// A call answered with an error status.
    Rpc(Status),
    /// Some of the work failed; the details were already reported.
    Partial(String),
}

impl From<Status> for CliError {
    fn from(status: Status) -> Self {
        Self::Rpc(status)
    }
}

impl CliError {
    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Local(_) => exit::LOCAL,
            Self::Partial(_) => exit::PARTIAL,
            Self::Rpc(status) => match status.code() {
                Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::NotFound
                | Code::AlreadyExists
                | Code::OutOfRange => exit::INVALID,
                Code::Unauthenticated | Code::PermissionDenied => exit::AUTH,
                _ => exit::SERVER,
            },
        }
    }

    /// The message for standard error: `error: <code>: <message>` and one indented line per
    /// field violation.
    pub(crate) fn render(&self) -> String {
        match self {
            Self::Local(message) | Self::Partial(message) => format!("error: {message}"),
            Self::Rpc(status) => {
                let violations = leadflow_runtime::error::field_violations(status);
                // The message often repeats the violations ("invalid request: a: b; c: d"):
                // they are listed one per line below instead.
                let listed: Vec<String> = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect();
                let message = status.message();
                let message = message
                    .strip_suffix(listed.join("; ").as_str())
                    .filter(|_| !listed.is_empty())
                    .map_or(message, |m| m.trim_end_matches([':', ' ']));
                let mut out = format!("error: {}: {message}", code_name(status.code()));
                for line in &listed {
                    let _ = write!(out, "\n  {line}");
                }
                match status.code() {
                    Code::Unavailable => out.push_str(
                        "\nhint: is the service running at the URL given (--*-url or \
                         LEADFLOW_*_URL)?",
                    ),
                    Code::Unauthenticated => out.push_str(
                        "\nhint: pass the tenant's API key with --api-key or LEADFLOW_API_KEY",
                    ),
                    _ => {}
                }
                out
            }
        }
    }
}

/// The canonical name of a gRPC code, e.g. `INVALID_ARGUMENT`.
pub(crate) fn code_name(code: Code) -> String {
    let camel = format!("{code:?}");
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_their_canonical_names_and_exit_codes() {
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(
            CliError::Rpc(Status::not_found("x")).exit_code(),
            exit::INVALID
        );
        assert_eq!(
            CliError::Rpc(Status::unavailable("x")).exit_code(),
            exit::SERVER
        );
        assert_eq!(
            CliError::Rpc(Status::permission_denied("x")).exit_code(),
            exit::AUTH
        );
    }
}
