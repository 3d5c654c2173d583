//! A fake Google for tests and local runs: OIDC sign-in with an account chooser
//! listing configured test users, ID tokens signed with RS256, the Admin SDK
//! Directory API's group listing, and the STS / IAM Credentials endpoints of
//! Workload Identity Federation. Nothing here talks to the internet.

pub mod config;
pub mod directory;
pub mod http;
pub mod keys;
pub mod oidc;
pub mod pages;
pub mod server;
pub mod state;
pub mod workload;
