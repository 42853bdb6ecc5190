//! Why a CLI command failed: what the cluster said (typed, from the
//! client), or what went wrong on this side.

use chronik_net::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The cluster refused, could not be reached, or did not serve the
    /// request in time.
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("reading stdin: {0}")]
    Stdin(std::io::Error),
    #[error("cannot print the result: {0}")]
    Output(String),
    /// A wait the command does after the cluster accepted the request
    /// (e.g. for a removed node to leave) ran out.
    #[error("{0}")]
    WaitTimedOut(String),
    /// A check answered no (the answer was printed first).
    #[error("{0}")]
    Unsafe(String),
}
