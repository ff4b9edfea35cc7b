/// Result alias for the runtime.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// What can stop a [`crate::Controller`] from running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A setting is out of range; nothing was started.
    #[error("controller {controller}: invalid {field}: {reason}")]
    InvalidConfig {
        controller: String,
        field: &'static str,
        reason: String,
    },
}
