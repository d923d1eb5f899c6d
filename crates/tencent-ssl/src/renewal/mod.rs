//! Finding the certificate to serve when Tencent Cloud renews it under a new id: following renewal links
//! from a spec'd id ([`follow`]) and choosing by domain from a list scan ([`domain`]). Pure decisions, no
//! I/O: the client fetches, these functions decide.

pub mod domain;
pub mod follow;
pub mod order;

pub use domain::{
    certificate_covers, domain_covers, is_selectable, select_by_domain, select_covering,
};
pub use follow::{
    Follower, LinkInfo, LinkKind, MAX_DEPTH, Resolution, Stop, follow_renewals,
    follow_renewals_with, status_in_progress, valid_at,
};
