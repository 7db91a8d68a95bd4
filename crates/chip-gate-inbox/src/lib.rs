#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod admin;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
mod error;
mod health;
mod intake;
pub mod metrics;
mod model;
mod ops;
mod store;
mod worker;

pub use error::{InboxError, IntakeError};
pub use health::Readiness;
pub use intake::{Intake, IntakeOptions, Receipt, dedup_key};
pub use model::{Counts, DeliveryState, DeliverySummary, InboxStatus, ListFilter, StoredDelivery};
pub use store::{BackendKind, DEFAULT_DATABASE_URL, Inbox, InboxOptions};
pub use worker::{
    Backoff, Completed, MIN_RETENTION, ProcessReport, StalePolicy, TxJob, Worker, WorkerOptions,
};
