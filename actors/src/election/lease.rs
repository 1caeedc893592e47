//! The Lease object of the leader election (coordination.k8s.io/v1 shape): reading the holder
//! and duration out of it, and building the acquired, renewed and released versions. Pure; the
//! elector writes what these functions build.

use std::time::{Duration, Instant};

use api::v1::{self, Object};

use super::decide::{observed_at, Observed};

/// A Lease's times as Kubernetes writes them (RFC 3339 with microseconds, UTC).
pub fn micro_time(now: chrono::DateTime<chrono::Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `spec.leaseDurationSeconds` for a configured duration: whole seconds, rounded up (a holder
/// never promises less than it keeps), at least 1.
pub fn lease_seconds(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
}

fn spec(obj: &Object) -> Option<&v1::LeaseSpec> {
    obj.as_typed::<v1::Lease>()?.spec.as_ref()
}

/// The holder named in a Lease (empty when released).
pub fn holder(obj: &Object) -> String {
    spec(obj)
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

/// What this server learns from reading `obj` at `now`, given the previous observation.
pub fn observe(obj: &Object, previous: Option<&Observed>, now: Instant) -> Observed {
    let rv = obj.metadata().resource_version.clone();
    let secs = spec(obj)
        .and_then(|s| s.lease_duration_seconds)
        .unwrap_or(0)
        .max(0);
    Observed {
        holder: holder(obj),
        duration: Duration::from_secs(u64::try_from(secs).unwrap_or(0)),
        observed_at: observed_at(previous, &rv, now),
        resource_version: rv,
    }
}

/// The lease taken over by `me`: `current` (if any) with a new holder, acquire and renew time
/// `now`, and one more transition when the holder changes. Keeps `current`'s resourceVersion,
/// so writing it is a compare-and-swap.
pub fn acquired(
    current: Option<&Object>,
    namespace: &str,
    name: &str,
    me: &str,
    duration: Duration,
    now: &str,
) -> Object {
    let (meta, transitions) = match current {
        Some(obj) => {
            let previous = spec(obj);
            let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
            let changed = holder(obj) != me;
            (
                obj.metadata().clone(),
                transitions.saturating_add(i32::from(changed)),
            )
        }
        None => (
            v1::ObjectMeta {
                name: name.to_string(),
                namespace: namespace.to_string(),
                ..Default::default()
            },
            0,
        ),
    };
    Object::from(v1::Lease {
        metadata: Some(meta),
        spec: Some(v1::LeaseSpec {
            holder_identity: Some(me.to_string()),
            lease_duration_seconds: Some(lease_seconds(duration)),
            acquire_time: now.to_string(),
            renew_time: now.to_string(),
            lease_transitions: Some(transitions),
        }),
    })
}

/// `current` with its renew time moved to `now` (same resourceVersion: a compare-and-swap).
pub fn renewed(current: &Object, now: &str) -> Object {
    let mut obj = current.clone();
    if let Some(lease) = obj.as_typed_mut::<v1::Lease>() {
        lease.spec.get_or_insert_with(Default::default).renew_time = now.to_string();
    }
    obj
}

/// `current` released: no holder and a one-second duration, so a standby takes it at once (as
/// client-go's release on cancel does).
pub fn released(current: &Object, now: &str) -> Object {
    let mut obj = current.clone();
    if let Some(lease) = obj.as_typed_mut::<v1::Lease>() {
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = now.to_string();
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(holder: &str, transitions: i32, rv: &str) -> Object {
        let mut obj = acquired(
            None,
            "kube-system",
            "cm",
            holder,
            Duration::from_secs(15),
            "t0",
        );
        obj.metadata_mut().resource_version = rv.into();
        if let Some(l) = obj.as_typed_mut::<v1::Lease>() {
            l.spec
                .get_or_insert_with(Default::default)
                .lease_transitions = Some(transitions);
        }
        obj
    }

    #[test]
    fn lease_seconds_round_up_and_are_at_least_one() {
        assert_eq!(lease_seconds(Duration::from_secs(15)), 15);
        assert_eq!(lease_seconds(Duration::from_millis(2_500)), 3);
        assert_eq!(lease_seconds(Duration::from_millis(10)), 1);
    }

    #[test]
    fn a_takeover_keeps_the_resource_version_and_counts_a_transition() {
        let current = stored("b", 4, "17");
        let next = acquired(
            Some(&current),
            "kube-system",
            "cm",
            "a",
            Duration::from_secs(3),
            "t1",
        );
        assert_eq!(next.metadata().resource_version, "17");
        let spec = spec(&next).cloned().unwrap_or_default();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(5));
        assert_eq!(spec.lease_duration_seconds, Some(3));
        assert_eq!(
            (spec.acquire_time.as_str(), spec.renew_time.as_str()),
            ("t1", "t1")
        );

        let again = acquired(
            Some(&next),
            "kube-system",
            "cm",
            "a",
            Duration::from_secs(3),
            "t2",
        );
        assert_eq!(
            spec_of(&again).lease_transitions,
            Some(5),
            "re-acquiring one's own lease is no transition"
        );
    }

    fn spec_of(obj: &Object) -> v1::LeaseSpec {
        spec(obj).cloned().unwrap_or_default()
    }

    #[test]
    fn a_first_acquisition_creates_the_lease_with_no_transitions() {
        let obj = acquired(
            None,
            "kube-system",
            "cm",
            "a",
            Duration::from_secs(15),
            "t0",
        );
        assert_eq!(obj.metadata().namespace, "kube-system");
        assert_eq!(obj.metadata().name, "cm");
        assert!(obj.metadata().resource_version.is_empty());
        assert_eq!(spec_of(&obj).lease_transitions, Some(0));
    }

    #[test]
    fn renewing_moves_only_the_renew_time_and_releasing_clears_the_holder() {
        let current = stored("a", 2, "17");
        let r = renewed(&current, "t9");
        assert_eq!(spec_of(&r).renew_time, "t9");
        assert_eq!(spec_of(&r).acquire_time, "t0");
        assert_eq!(holder(&r), "a");
        let gone = released(&current, "t9");
        assert_eq!(holder(&gone), "");
        assert_eq!(spec_of(&gone).lease_duration_seconds, Some(1));
        assert_eq!(gone.metadata().resource_version, "17");
    }

    #[test]
    fn observing_reads_holder_duration_and_version() {
        let now = Instant::now();
        let o = observe(&stored("b", 0, "17"), None, now);
        assert_eq!(o.holder, "b");
        assert_eq!(o.duration, Duration::from_secs(15));
        assert_eq!(o.resource_version, "17");
        assert_eq!(o.observed_at, now);
    }
}
