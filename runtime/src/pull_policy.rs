//! The `imagePullPolicy` decision: given the policy and whether the image is already in the
//! local store, pull it, use the local copy, or fail. Pure; the agent performs the pull.

use std::fmt;
use std::str::FromStr;

/// A container's image pull policy, as in Kubernetes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PullPolicy {
    /// Pull on every container start (the registry may have moved the tag).
    Always,
    /// Pull only when the image is not in the local store.
    IfNotPresent,
    /// Never pull; the image must already be local.
    Never,
}

/// What to do before starting a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullAction {
    /// Pull the image from its registry.
    Pull,
    /// Use the image already in the local store.
    UseLocal,
    /// Fail the container start: policy `Never` and the image is absent (`ErrImageNeverPull`).
    Fail,
}

impl PullPolicy {
    /// The Kubernetes default for an image without an explicit policy: `Always` for `:latest`
    /// or an untagged reference, `IfNotPresent` otherwise (a digest pins the content).
    pub fn default_for(image: &str) -> PullPolicy {
        if image.contains('@') {
            return PullPolicy::IfNotPresent;
        }
        let last = image.rsplit('/').next().unwrap_or(image);
        match last.split_once(':') {
            None => PullPolicy::Always,
            Some((_, "latest")) => PullPolicy::Always,
            Some(_) => PullPolicy::IfNotPresent,
        }
    }

    /// Decides the action for an image that is (`present`) or is not in the local store.
    pub fn decide(self, present: bool) -> PullAction {
        match (self, present) {
            (PullPolicy::Always, _) => PullAction::Pull,
            (PullPolicy::IfNotPresent, true) | (PullPolicy::Never, true) => PullAction::UseLocal,
            (PullPolicy::IfNotPresent, false) => PullAction::Pull,
            (PullPolicy::Never, false) => PullAction::Fail,
        }
    }
}

/// A pull policy string that is not `Always`, `IfNotPresent` or `Never`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown image pull policy {0:?}: want Always, IfNotPresent or Never")]
pub struct UnknownPullPolicy(pub String);

impl FromStr for PullPolicy {
    type Err = UnknownPullPolicy;

    fn from_str(s: &str) -> Result<PullPolicy, UnknownPullPolicy> {
        match s {
            "Always" => Ok(PullPolicy::Always),
            "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
            "Never" => Ok(PullPolicy::Never),
            other => Err(UnknownPullPolicy(other.to_owned())),
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_and_presence_maps_to_one_action() {
        use PullAction::*;
        use PullPolicy::*;
        let table = [
            (Always, true, Pull),
            (Always, false, Pull),
            (IfNotPresent, true, UseLocal),
            (IfNotPresent, false, Pull),
            (Never, true, UseLocal),
            (Never, false, Fail),
        ];
        for (policy, present, want) in table {
            assert_eq!(policy.decide(present), want, "{policy} present={present}");
        }
    }

    #[test]
    fn latest_or_untagged_defaults_to_always() {
        assert_eq!(PullPolicy::default_for("busybox"), PullPolicy::Always);
        assert_eq!(
            PullPolicy::default_for("busybox:latest"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::default_for("localhost:5000/busybox"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::default_for("localhost:5000/busybox:1.36"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::default_for("busybox@sha256:abc"),
            PullPolicy::IfNotPresent
        );
    }

    #[test]
    fn policies_parse_and_print_as_in_kubernetes() {
        for p in [
            PullPolicy::Always,
            PullPolicy::IfNotPresent,
            PullPolicy::Never,
        ] {
            assert_eq!(p.to_string().parse::<PullPolicy>(), Ok(p));
        }
        assert!("always".parse::<PullPolicy>().is_err());
    }
}
