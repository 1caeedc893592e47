//! What a container needs from the node before it can start: its image (per
//! `imagePullPolicy`, pulling from a registry with back-off after failures) and its cgroup
//! limits converted from Kubernetes quantities.

use std::time::{Duration, Instant};

use api::v1;
use runtime::{PullAction, PullPolicy, RegistryAuth, Resources};

use super::context::{blocking, AgentContext};
use super::plan::StartFailure;

/// First delay after a failed pull; doubles per failure up to [`PULL_BACKOFF_MAX`].
const PULL_BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Cap of the pull back-off.
const PULL_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Failed pulls of one container: when the last one failed, how many in a row, and why.
#[derive(Debug, Clone)]
pub struct PullFailures {
    last: Instant,
    count: u32,
    error: String,
}

impl PullFailures {
    fn backoff(&self) -> Duration {
        PULL_BACKOFF_BASE
            .saturating_mul(2u32.saturating_pow(self.count.saturating_sub(1).min(8)))
            .min(PULL_BACKOFF_MAX)
    }
}

/// The container's pull policy: the spec's, or Kubernetes' default for the image.
pub fn pull_policy(c: &v1::Container) -> PullPolicy {
    c.image_pull_policy
        .parse()
        .unwrap_or_else(|_| PullPolicy::default_for(&c.image))
}

/// The credentials for pulling `image` from the pod's `imagePullSecrets` (Docker config
/// Secrets): the first with an entry for the image's registry, else anonymous, as the kubelet
/// falls back when no secret matches. A malformed secret is skipped with a warning.
pub fn pull_auth(image: &str, secrets: &[v1::Secret]) -> RegistryAuth {
    let Some(registry) = runtime::registry::registry_of(image) else {
        return RegistryAuth::Anonymous;
    };
    for secret in secrets {
        let name = secret
            .metadata
            .as_ref()
            .map(|m| m.name.as_str())
            .unwrap_or_default();
        let config = match secret.r#type.as_str() {
            "kubernetes.io/dockerconfigjson" => secret.data.get(".dockerconfigjson"),
            "kubernetes.io/dockercfg" => secret.data.get(".dockercfg"),
            _ => None,
        };
        let Some(config) = config else {
            tracing::warn!(secret = %name, "imagePullSecret is not a Docker config secret; skipped");
            continue;
        };
        match runtime::docker_config::auth_for(config, &registry) {
            Ok(Some(auth)) => return auth,
            Ok(None) => {}
            Err(e) => tracing::warn!(secret = %name, error = %e, "imagePullSecret skipped"),
        }
    }
    RegistryAuth::Anonymous
}

/// Makes the container's image available, or says why it cannot start (a waiting reason).
/// Pulls use the credentials in `pull_secrets` for the image's registry (see [`pull_auth`]).
pub async fn ensure_image(
    ctx: &AgentContext,
    c: &v1::Container,
    pull_secrets: &[v1::Secret],
    failures: &mut Option<PullFailures>,
) -> Result<(), StartFailure> {
    let (rt, image) = (ctx.runtime.clone(), c.image.clone());
    let present = blocking(move || Ok(rt.images().get(&image)?.is_some()))
        .await
        .map_err(|e| StartFailure {
            reason: "ErrImagePull".into(),
            message: e.to_string(),
        })?;
    match pull_policy(c).decide(present) {
        PullAction::UseLocal => Ok(()),
        PullAction::Fail => Err(StartFailure {
            reason: "ErrImageNeverPull".into(),
            message: format!(
                "container image {:?} is not present with pull policy of Never; import it with `capstan image import`",
                c.image
            ),
        }),
        PullAction::Pull => {
            if let Some(f) = failures {
                if f.last.elapsed() < f.backoff() {
                    return Err(StartFailure {
                        reason: "ImagePullBackOff".into(),
                        message: format!("Back-off pulling image {:?}: {}", c.image, f.error),
                    });
                }
            }
            let auth = pull_auth(&c.image, pull_secrets);
            match ctx.puller.pull(&c.image, &auth).await {
                Ok(_) => {
                    *failures = None;
                    Ok(())
                }
                Err(e) => {
                    let count = failures.as_ref().map(|f| f.count).unwrap_or(0) + 1;
                    let error = e.to_string();
                    *failures = Some(PullFailures { last: Instant::now(), count, error: error.clone() });
                    Err(StartFailure { reason: "ErrImagePull".into(), message: error })
                }
            }
        }
    }
}

/// cgroup limits from the container's requests and limits (cpu in millicores, memory in
/// bytes). Unparsable quantities were refused by validation; here they count as unset.
pub fn resources(c: &v1::Container) -> Resources {
    let get = |m: Option<&std::collections::BTreeMap<String, String>>, k: &str| {
        m.and_then(|m| m.get(k))
            .and_then(|q| api::Quantity::parse(q).ok())
    };
    let r = c.resources.as_ref();
    let (requests, limits) = (r.map(|r| &r.requests), r.map(|r| &r.limits));
    let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
    Resources {
        cpu_request_millis: get(requests, "cpu").and_then(|q| positive(q.as_millis())),
        cpu_limit_millis: get(limits, "cpu").and_then(|q| positive(q.as_millis())),
        memory_limit_bytes: get(limits, "memory").and_then(|q| positive(q.as_bytes())),
        pids_limit: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_become_cgroup_limits() {
        let c = v1::Container {
            resources: Some(v1::ResourceRequirements {
                requests: [("cpu".to_string(), "250m".to_string())].into(),
                limits: [
                    ("cpu".to_string(), "1.5".to_string()),
                    ("memory".to_string(), "64Mi".to_string()),
                ]
                .into(),
            }),
            ..Default::default()
        };
        let r = resources(&c);
        assert_eq!(r.cpu_request_millis, Some(250));
        assert_eq!(r.cpu_limit_millis, Some(1500));
        assert_eq!(r.memory_limit_bytes, Some(64 * 1024 * 1024));
        assert_eq!(resources(&v1::Container::default()), Resources::default());
    }

    #[test]
    fn the_pull_policy_defaults_like_kubernetes() {
        let c = |image: &str, policy: &str| v1::Container {
            image: image.into(),
            image_pull_policy: policy.into(),
            ..Default::default()
        };
        assert_eq!(pull_policy(&c("busybox:latest", "")), PullPolicy::Always);
        assert_eq!(
            pull_policy(&c("busybox:1.36", "")),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            pull_policy(&c("busybox:latest", "Never")),
            PullPolicy::Never
        );
    }

    #[test]
    fn pull_back_off_doubles_to_five_minutes() {
        let f = |count| {
            PullFailures {
                last: Instant::now(),
                count,
                error: String::new(),
            }
            .backoff()
            .as_secs()
        };
        assert_eq!((f(1), f(2), f(3), f(10)), (10, 20, 40, 300));
    }

    #[test]
    fn pull_secrets_give_the_matching_registrys_credentials() {
        let secret = |name: &str, ty: &str, key: &str, json: &str| v1::Secret {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            r#type: ty.into(),
            data: [(key.to_string(), json.as_bytes().to_vec())].into(),
            ..Default::default()
        };
        let secrets = [
            secret("opaque", "Opaque", "x", "{}"),
            secret(
                "other",
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                r#"{"auths": {"quay.io": {"username": "q", "password": "1"}}}"#,
            ),
            secret(
                "local",
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                r#"{"auths": {"127.0.0.1:5000": {"username": "u", "password": "p"}}}"#,
            ),
        ];
        assert_eq!(
            pull_auth("127.0.0.1:5000/app:1", &secrets),
            RegistryAuth::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(
            pull_auth("ghcr.io/x/y:1", &secrets),
            RegistryAuth::Anonymous
        );
    }
}
