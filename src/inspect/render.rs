//! The terminal view of [`ResourceView`]s.

use std::fmt::Write as _;

use super::ResourceView;

/// `3d`, `5h12m`, `42s`: a duration for a terminal.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.unsigned_abs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d", s / 86400),
    }
}

/// `2026-01-01T00:00:00Z (in 3d)` / `(5m ago)`.
fn when(time: &str, now: jiff::Timestamp) -> String {
    match time.parse::<jiff::Timestamp>() {
        Ok(t) => {
            let delta = t.as_second() - now.as_second();
            if delta >= 0 {
                format!("{time} (in {})", human_duration(delta))
            } else {
                format!("{time} ({} ago)", human_duration(delta))
            }
        }
        Err(_) => time.to_string(),
    }
}

/// The terminal view of several resources, separated by blank lines.
pub fn render_text(views: &[ResourceView], now: jiff::Timestamp) -> String {
    let mut out = String::new();
    for (i, view) in views.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_one(&mut out, view, now);
    }
    out
}

// Writing into a String cannot fail: the `fmt::Result`s below are ignored on purpose.
fn render_one(out: &mut String, v: &ResourceView, now: jiff::Timestamp) {
    let _ = writeln!(
        out,
        "TencentCertificate {}/{}: Ready={} ({})",
        v.namespace, v.name, v.ready, v.reason
    );
    let _ = write!(out, "  Wants:       {}", v.target);
    if let Some(resolved) = v
        .resolved_certificate_id
        .as_ref()
        .filter(|r| **r != v.target)
    {
        let _ = write!(out, "  → {resolved}");
        if !v.renewal_chain.is_empty() {
            let _ = write!(out, " (renewals {})", v.renewal_chain.join(" → "));
        }
    }
    let _ = writeln!(out, "  → Secret {}", v.secret.name);
    let _ = writeln!(out, "  Conditions:");
    if v.conditions.is_empty() {
        let _ = writeln!(out, "    (none yet: the operator has not reconciled it)");
    }
    for c in &v.conditions {
        let _ = writeln!(
            out,
            "    {:<7} {:<6} {:<22} since {}",
            c.type_,
            c.status,
            c.reason,
            when(&c.last_transition_time, now)
        );
        if !c.message.is_empty() {
            let _ = writeln!(out, "      {}", c.message);
        }
    }
    render_secret(out, v, now);
    let _ = writeln!(out, "  Checks:");
    for check in &v.checks {
        let _ = writeln!(
            out,
            "    {} {:<13} {}",
            if check.ok { "ok  " } else { "FAIL" },
            check.check,
            check.detail
        );
    }
    let _ = writeln!(
        out,
        "  Sync:        last {}, next {}, consecutive failures {}",
        v.last_sync_time
            .as_deref()
            .map_or_else(|| "never".to_string(), |t| when(t, now)),
        v.next_sync_time
            .as_deref()
            .map_or_else(|| "not planned".to_string(), |t| when(t, now)),
        v.failures
    );
    render_events(out, v, now);
}

/// The Secret the resource names: the certificate it holds, or why there is none.
fn render_secret(out: &mut String, v: &ResourceView, now: jiff::Timestamp) {
    let _ = writeln!(out, "  Secret {}:", v.secret.name);
    match (&v.secret.certificate, &v.secret.certificate_error) {
        (Some(c), _) => {
            let none = || "-".to_string();
            let _ = writeln!(
                out,
                "    Subject:     {}",
                c.subject.clone().unwrap_or_else(none)
            );
            let mut sans = c.dns_names.clone();
            sans.extend(c.ip_addresses.iter().cloned());
            let _ = writeln!(out, "    SANs:        {}", sans.join(", "));
            let _ = writeln!(
                out,
                "    Issuer:      {}",
                c.issuer.clone().unwrap_or_else(none)
            );
            let _ = writeln!(out, "    Not before:  {}", c.not_before);
            let _ = writeln!(
                out,
                "    Not after:   {}{}",
                when(&c.not_after, now),
                if c.expired { "  EXPIRED" } else { "" }
            );
            let _ = writeln!(out, "    Serial:      {}", c.serial_number);
            let _ = writeln!(out, "    SHA-256:     {}", c.fingerprint_sha256);
            let _ = writeln!(
                out,
                "    Key:         {}, {}; chain of {} certificate(s)",
                c.key_type,
                if c.private_key_matches {
                    "tls.key matches"
                } else {
                    "tls.key does NOT match"
                },
                c.chain_length
            );
        }
        (None, Some(error)) => {
            let _ = writeln!(out, "    {error}");
        }
        (None, None) => {
            let _ = writeln!(out, "    does not exist");
        }
    }
}

/// The resource's events, newest first.
fn render_events(out: &mut String, v: &ResourceView, now: jiff::Timestamp) {
    let _ = writeln!(out, "  Events (newest first):");
    if let Some(error) = &v.events_error {
        let _ = writeln!(out, "    cannot list events: {error}");
    } else if v.events.is_empty() {
        let _ = writeln!(out, "    none");
    }
    for e in &v.events {
        let age = e
            .time
            .parse::<jiff::Timestamp>()
            .map(|t| format!("{} ago", human_duration(now.as_second() - t.as_second())))
            .unwrap_or_default();
        let count = if e.count > 1 {
            format!(" (x{})", e.count)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "    {:<8} {:<7} {:<20} {}{}",
            age, e.type_, e.reason, e.message, count
        );
    }
}
