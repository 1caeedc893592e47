//! Leader election among control-plane servers. Every server serves the API, but only the
//! holder of one Lease object (`kube-system/capstan-controller-manager`) runs the scheduler and
//! the controllers; the others stand by and take over when the holder stops renewing.
//!
//! - [`decide`]: the pure decision (acquire, renew, follow, retry, lost);
//! - [`lease`]: building and reading the Lease objects;
//! - [`elector`]: the actor that reads and writes the lease and starts and stops the control
//!   plane as leadership comes and goes.
//!
//! Two leaders never act at once: a leader stops before its lease can expire for the others
//! (renew deadline < lease duration), and every control-plane write is fenced by the revision
//! at which its leader took the lease over (see [`crate::apiserver::fence`]).

pub mod decide;
pub mod elector;
pub mod lease;

use std::time::Duration;

pub use elector::{ElectionStatus, Elector, ElectorArgs, ElectorMsg};

/// Namespace of the control plane's Lease.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// Name of the control plane's Lease.
pub const LEASE_NAME: &str = "capstan-controller-manager";

/// Timing of the election, as kube-controller-manager's `--leader-elect-*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionConfig {
    /// How long a holder's lease stays valid without renewal; standbys wait this long after
    /// the last change they saw before taking over.
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before it stops acting.
    pub renew_deadline: Duration,
    /// How often the lease is read and renewed.
    pub retry_period: Duration,
}

impl Default for ElectionConfig {
    /// kube-controller-manager's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        ElectionConfig {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why an election timing is unsafe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A duration is zero.
    #[error("{field} must be greater than zero")]
    Zero {
        /// The field.
        field: &'static str,
    },
    /// The renew deadline is not shorter than the lease duration: a leader could still act
    /// after a standby took over.
    #[error("renew deadline ({renew_deadline:?}) must be shorter than the lease duration ({lease_duration:?})")]
    DeadlineNotBeforeExpiry {
        /// The renew deadline.
        renew_deadline: Duration,
        /// The lease duration.
        lease_duration: Duration,
    },
    /// The retry period is not shorter than the renew deadline: a leader would get at most one
    /// try to renew.
    #[error("retry period ({retry_period:?}) must be shorter than the renew deadline ({renew_deadline:?})")]
    RetryNotBeforeDeadline {
        /// The retry period.
        retry_period: Duration,
        /// The renew deadline.
        renew_deadline: Duration,
    },
}

impl ElectionConfig {
    /// A timing for `lease_duration`, with the renew deadline and retry period given or derived
    /// in kube-controller-manager's proportions (2/3 and 2/15 of the lease duration).
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Option<Duration>,
        retry_period: Option<Duration>,
    ) -> Result<Self, ConfigError> {
        let cfg = ElectionConfig {
            lease_duration,
            renew_deadline: renew_deadline.unwrap_or(lease_duration * 2 / 3),
            retry_period: retry_period.unwrap_or(lease_duration * 2 / 15),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that a leader always stops before its lease can expire for the others.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, d) in [
            ("lease duration", self.lease_duration),
            ("renew deadline", self.renew_deadline),
            ("retry period", self.retry_period),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero { field });
            }
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(ConfigError::DeadlineNotBeforeExpiry {
                renew_deadline: self.renew_deadline,
                lease_duration: self.lease_duration,
            });
        }
        if self.retry_period >= self.renew_deadline {
            return Err(ConfigError::RetryNotBeforeDeadline {
                retry_period: self.retry_period,
                renew_deadline: self.renew_deadline,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kube_controller_managers_and_valid() {
        let d = ElectionConfig::default();
        assert_eq!(
            ElectionConfig::new(Duration::from_secs(15), None, None).unwrap(),
            d
        );
        assert_eq!(d.renew_deadline, Duration::from_secs(10));
        assert_eq!(d.retry_period, Duration::from_secs(2));
        assert!(d.validate().is_ok());
    }

    #[test]
    fn a_short_lease_derives_a_proportional_deadline_and_retry_period() {
        let c = ElectionConfig::new(Duration::from_secs(3), None, None);
        assert_eq!(
            c,
            Ok(ElectionConfig {
                lease_duration: Duration::from_secs(3),
                renew_deadline: Duration::from_secs(2),
                retry_period: Duration::from_millis(400),
            })
        );
    }

    #[test]
    fn unsafe_timings_are_refused_with_the_reason() {
        let s = Duration::from_secs;
        assert!(matches!(
            ElectionConfig::new(s(3), Some(s(10)), None),
            Err(ConfigError::DeadlineNotBeforeExpiry { .. })
        ));
        assert!(matches!(
            ElectionConfig::new(s(15), Some(s(10)), Some(s(10))),
            Err(ConfigError::RetryNotBeforeDeadline { .. })
        ));
        assert!(matches!(
            ElectionConfig::new(Duration::ZERO, None, None),
            Err(ConfigError::Zero {
                field: "lease duration"
            })
        ));
    }
}
