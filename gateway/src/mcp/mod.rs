//! The MCP protocol side of the gateway.

pub mod answers;
pub mod asks;
pub mod bridge;
pub mod call;
pub mod cursor;
pub mod early;
pub mod exchange;
pub mod fanout;
pub mod forward;
pub mod guards;
pub mod handler;
pub mod index;
pub mod lifecycle;
pub mod listen;
pub mod modern;
pub mod names;
pub mod passthrough;
pub mod relay;
pub mod routing;
pub mod session;
pub mod shape;
pub mod stream;
pub mod subscriptions;

pub use crate::wire::{jsonrpc, version};
