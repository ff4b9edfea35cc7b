//! The agent's one error type.

use drover_ids::NodeId;

/// What can go wrong in the agent; each variant names what it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Another live agent holds this node's registration.
    #[error(
        "node {node} is already registered by another live agent ({holder}, at {address}); \
         stop it or pick another --node"
    )]
    NodeTaken {
        node: NodeId,
        holder: String,
        address: String,
    },
    /// The store refused or failed a call.
    #[error("store: {context}")]
    Store {
        context: String,
        #[source]
        source: drover_store::StoreError,
    },
    /// A record in the store does not decode.
    #[error("corrupt record at {key}: {message}")]
    Corrupt { key: String, message: String },
    /// Reading or writing reality failed.
    #[error("reality of pod {pod}")]
    Reality {
        pod: String,
        #[source]
        source: drover_manifest::ManifestError,
    },
    /// Writing a health result failed.
    #[error("health of pod {pod}")]
    Health {
        pod: String,
        #[source]
        source: drover_health::HealthError,
    },
    /// Applying node labels failed.
    #[error("labels of node {node}")]
    Labels {
        node: NodeId,
        #[source]
        source: drover_labels::LabelError,
    },
    /// A local file or process operation failed.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An artifact launchable could not be fetched, verified or unpacked.
    #[error("artifact of {launchable} ({location}): {problem}")]
    Artifact {
        launchable: String,
        location: String,
        problem: String,
    },
    /// The agent's configuration is invalid.
    #[error("invalid agent configuration: {0}")]
    Config(String),
    /// The controller runtime stopped with an error.
    #[error("controller runtime")]
    Runtime(#[source] drover_runtime::RuntimeError),
}

/// The agent's result type.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

impl AgentError {
    pub(crate) fn store(
        context: impl Into<String>,
    ) -> impl FnOnce(drover_store::StoreError) -> Self {
        let context = context.into();
        move |source| AgentError::Store { context, source }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| AgentError::Io { context, source }
    }
}

/// `e`, then each of its sources, joined with ": " (the most telling part
/// of an error is often a source: "error sending request" → "connection
/// refused").
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
