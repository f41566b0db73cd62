//! The token service: database, management and proxy tokens, their store
//! (embedded SQLite, or PostgreSQL shared by replicas), the IOx-compatible
//! Authorize RPC and the management API.

pub mod authorize;
pub mod bootstrap;
pub mod local;
pub mod location;
pub mod management;
pub mod model;
pub mod paging;
pub mod postgres;
pub mod registry;
mod rows;
pub mod schema;
pub mod secret;
pub mod server;
pub mod sqlite;
mod status;
pub mod store;
pub mod throttle;
pub mod time;
pub mod unicode;
pub mod watch;
pub mod wire;

pub use location::StoreLocation;
pub use postgres::PgStore;
pub use registry::TokenRegistry;
pub use sqlite::SqliteStore;
