//! Flux bucket extraction (being written; refuses everything meanwhile).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FluxAccess {
    pub reads: Vec<String>,
    pub writes: Vec<String>,
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FluxError {
    #[error("Flux is not supported yet")]
    Unsupported,
}
pub fn analyze(_flux: &str) -> Result<FluxAccess, FluxError> {
    Err(FluxError::Unsupported)
}
