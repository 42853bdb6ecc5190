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
    #[error("unknown node {0}")]
    UnknownNode(u64),
    #[error("unknown partition {0}-{1}")]
    UnknownPartition(String, u32),
    /// `health` found the cluster degraded or unavailable (its report was
    /// printed).
    #[error("cluster is {0:?}")]
    Unhealthy(crate::status::Verdict),
}

/// Exit code when no node could be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

impl CliError {
    /// The documented exit code: 1 refused or degraded, 2 unavailable
    /// (health), 3 no node reachable. (Bad usage, 2, is clap's.)
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(ClientError::Unreachable { .. }) => EXIT_UNREACHABLE,
            CliError::Unhealthy(crate::status::Verdict::Unavailable) => 2,
            _ => 1,
        }
    }

    /// Whether the command already printed what went wrong.
    pub fn reported(&self) -> bool {
        matches!(self, CliError::Unhealthy(_))
    }
}
