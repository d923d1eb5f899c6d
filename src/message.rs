//! The lengths the API server accepts for the text the operator writes, and cutting messages to them.
//! Pure.
//!
//! - An Event's `note` (events.k8s.io/v1, which kube's `Recorder` writes): at most 1024 bytes
//!   (`NoteLengthLimit` in kubernetes `pkg/apis/core/validation/events.go`, compared with Go's `len`, so
//!   bytes). A longer note makes the API server refuse the whole event, and the operator could only log that.
//!   `reason` and `action`: at most 128 bytes each (`ReasonLengthLimit`, `ActionLengthLimit`).
//! - A condition's `message` (`metav1.Condition`): at most 32768 characters (`+kubebuilder:validation:
//!   MaxLength=32768`); cut at 32768 bytes, which is never more characters.
//!
//! Messages are cut on a character boundary and end with an ellipsis, so a reader sees they were cut.

use std::borrow::Cow;

use kube::runtime::events::Event;

/// Longest `metav1.Condition.message` (characters; bytes here, which is never more characters).
pub const CONDITION_MESSAGE_MAX_BYTES: usize = 32 * 1024;
/// Longest Event `note` the API server accepts (bytes).
pub const EVENT_NOTE_MAX_BYTES: usize = 1024;
/// Longest Event `reason` and `action` the API server accepts (bytes).
pub const EVENT_REASON_MAX_BYTES: usize = 128;

/// What a cut message ends with.
pub const ELLIPSIS: &str = "…";

/// `text` if it fits in `max_bytes`, else its longest prefix that ends on a character boundary and leaves
/// room for [`ELLIPSIS`], followed by it. The result never exceeds `max_bytes` (when `max_bytes` is too
/// small for the ellipsis itself, the text is cut without one).
pub fn truncate(text: &str, max_bytes: usize) -> Cow<'_, str> {
    if text.len() <= max_bytes {
        return Cow::Borrowed(text);
    }
    let (budget, suffix) = match max_bytes.checked_sub(ELLIPSIS.len()) {
        Some(budget) => (budget, ELLIPSIS),
        None => (max_bytes, ""),
    };
    let mut end = budget;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{suffix}", &text[..end]))
}

/// `event` cut to what the API server accepts (see the module docs).
pub fn fit_event(mut event: Event) -> Event {
    if let Some(note) = &event.note
        && note.len() > EVENT_NOTE_MAX_BYTES
    {
        event.note = Some(truncate(note, EVENT_NOTE_MAX_BYTES).into_owned());
    }
    if event.reason.len() > EVENT_REASON_MAX_BYTES {
        event.reason = truncate(&event.reason, EVENT_REASON_MAX_BYTES).into_owned();
    }
    if event.action.len() > EVENT_REASON_MAX_BYTES {
        event.action = truncate(&event.action, EVENT_REASON_MAX_BYTES).into_owned();
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::events::EventType;

    #[test]
    fn short_text_is_kept_as_it_is() {
        assert!(matches!(truncate("short", 10), Cow::Borrowed("short")));
        assert_eq!(truncate("exactly10!", 10), "exactly10!");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn long_text_is_cut_to_the_limit_with_an_ellipsis() {
        let text = "a".repeat(2000);
        let cut = truncate(&text, EVENT_NOTE_MAX_BYTES);
        assert_eq!(cut.len(), EVENT_NOTE_MAX_BYTES);
        assert!(cut.ends_with(ELLIPSIS));
        assert!(text.starts_with(cut.trim_end_matches(ELLIPSIS)));
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        // Two-, three- and four-byte characters straddling every possible cut point.
        for piece in ["é", "证", "🔒"] {
            let text = piece.repeat(700);
            for max in [1, 2, 3, 4, 5, 6, 7, 100, 1023, 1024, 1025] {
                let cut = truncate(&text, max);
                assert!(cut.len() <= max, "{piece} {max}: {}", cut.len());
                // A valid prefix: what precedes the ellipsis is whole characters of the text.
                let kept = cut.strip_suffix(ELLIPSIS).unwrap_or(&cut);
                assert!(text.starts_with(kept), "{piece} {max}");
                assert_eq!(kept.len() % piece.len(), 0, "{piece} {max}");
                // As much as fits: one more character would not.
                let room = if max >= ELLIPSIS.len() {
                    max - ELLIPSIS.len()
                } else {
                    max
                };
                assert!(kept.len() + piece.len() > room, "{piece} {max}");
            }
        }
    }

    #[test]
    fn a_limit_below_the_ellipsis_cuts_without_one() {
        assert_eq!(truncate("abcdef", 2), "ab");
        assert_eq!(truncate("abcdef", 3), "…");
    }

    #[test]
    fn events_are_fitted_to_the_api_servers_limits() {
        let event = fit_event(Event {
            type_: EventType::Warning,
            reason: "R".repeat(300),
            note: Some("証".repeat(1000)),
            action: "FollowRenewalTo".repeat(20),
            secondary: None,
        });
        let note = event.note.unwrap();
        assert!(note.len() <= EVENT_NOTE_MAX_BYTES && note.ends_with(ELLIPSIS));
        assert!(event.reason.len() <= EVENT_REASON_MAX_BYTES);
        assert!(event.action.len() <= EVENT_REASON_MAX_BYTES);
        let short = fit_event(Event {
            type_: EventType::Normal,
            reason: "Synced".into(),
            note: Some("fine".into()),
            action: "Sync".into(),
            secondary: None,
        });
        assert_eq!(
            (
                short.reason.as_str(),
                short.note.as_deref(),
                short.action.as_str()
            ),
            ("Synced", Some("fine"), "Sync")
        );
    }

    #[test]
    fn condition_messages_fit_metav1_condition() {
        let text = "x".repeat(CONDITION_MESSAGE_MAX_BYTES * 2);
        let cut = truncate(&text, CONDITION_MESSAGE_MAX_BYTES);
        assert!(cut.chars().count() <= CONDITION_MESSAGE_MAX_BYTES);
        assert!(cut.len() <= CONDITION_MESSAGE_MAX_BYTES);
    }
}
