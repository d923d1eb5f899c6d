pub mod layout;
pub mod pki;
