//! The token service: database, management and proxy tokens, their
//! embedded store, the IOx-compatible Authorize RPC and the management API.

pub mod authorize;
pub mod management;
pub mod model;
pub mod registry;
pub mod secret;
pub mod server;
pub mod sqlite;
mod status;
pub mod store;
pub mod throttle;
pub mod unicode;
pub mod watch;
pub mod wire;

pub use registry::TokenRegistry;
pub use sqlite::SqliteStore;
