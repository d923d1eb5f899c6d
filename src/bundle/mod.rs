//! Certificate bundle extraction from Tencent Cloud ZIPs (design.md §7).

pub mod pem;
