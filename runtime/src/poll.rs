//! How often the agent side looks at a shim's record while it waits for a start, an exit or
//! a shim to go away. Pure: it only picks the next sleep; the waiting loops do the I/O.

use std::time::Duration;

/// Fast polling lasts this long: a container start, or the exit of one that was told to
/// stop, nearly always lands inside it.
const FAST_FOR: Duration = Duration::from_millis(100);
/// Polling at medium pace lasts until this much time was waited.
const MEDIUM_UNTIL: Duration = Duration::from_secs(1);

/// The sleep before the next look, `waited` into the wait: 1 ms while the event is likely
/// imminent, 5 ms up to 1 s, then 20 ms. A look is a small file read, so even 100 waiters at
/// 1 ms stay cheap, and long waits (slow images, long grace periods) cost almost nothing.
pub(crate) fn poll_interval(waited: Duration) -> Duration {
    if waited < FAST_FOR {
        Duration::from_millis(1)
    } else if waited < MEDIUM_UNTIL {
        Duration::from_millis(5)
    } else {
        Duration::from_millis(20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_fast_first_then_slows_down() {
        assert_eq!(poll_interval(Duration::ZERO), Duration::from_millis(1));
        assert_eq!(
            poll_interval(Duration::from_millis(99)),
            Duration::from_millis(1)
        );
        assert_eq!(
            poll_interval(Duration::from_millis(100)),
            Duration::from_millis(5)
        );
        assert_eq!(
            poll_interval(Duration::from_secs(1)),
            Duration::from_millis(20)
        );
        assert_eq!(
            poll_interval(Duration::from_secs(3600)),
            Duration::from_millis(20)
        );
    }
}
