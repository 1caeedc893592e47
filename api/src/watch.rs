//! Watch event types: the closed set of strings carried in `WatchEvent.type`, and
//! helpers to build and read events. Both the server and the client SDK use these so
//! the strings are spelled in one place.

use std::fmt;

use crate::v1;

/// What happened to the object in a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The object was created (or first seen by this watch).
    Added,
    /// The object changed.
    Modified,
    /// The object was removed; the event carries its last state.
    Deleted,
    /// No change; carries only a newer resource_version to resume from.
    Bookmark,
}

impl EventType {
    /// The wire string, e.g. `"ADDED"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
        }
    }

    /// Parses the wire string; `None` for anything else.
    pub fn parse(s: &str) -> Option<EventType> {
        match s {
            "ADDED" => Some(EventType::Added),
            "MODIFIED" => Some(EventType::Modified),
            "DELETED" => Some(EventType::Deleted),
            "BOOKMARK" => Some(EventType::Bookmark),
            _ => None,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl v1::WatchEvent {
    /// Builds an event of the given type about an object.
    pub fn new(event_type: EventType, object: v1::Object) -> Self {
        Self {
            r#type: event_type.as_str().to_string(),
            object: Some(object),
        }
    }

    /// The event's type, or `None` if the server sent an unknown string.
    pub fn event_type(&self) -> Option<EventType> {
        EventType::parse(&self.r#type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_through_their_wire_strings() {
        for t in [
            EventType::Added,
            EventType::Modified,
            EventType::Deleted,
            EventType::Bookmark,
        ] {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(
                v1::WatchEvent::new(t, v1::Object::default()).event_type(),
                Some(t)
            );
        }
        assert_eq!(EventType::parse("added"), None);
    }
}
