//! One way to call an AWS control plane (RDS, CloudWatch, ElastiCache):
//! every call has a deadline and retries throttling with backoff, and a
//! refusal becomes one line naming the IAM action and the policy
//! statement that grants it. The S3 storage backend keeps its own
//! settings (its retries wrap whole objects).

use crate::{Error, ErrorKind};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::time::Duration;

/// Where and as whom a control-plane client calls.
#[derive(Debug, Clone, Default)]
pub struct AwsTarget {
    /// The AWS region ("us-east-1").
    pub region: String,
    /// Another endpoint (a VPC interface endpoint, a test server).
    pub endpoint: Option<String>,
    /// Static keys (id, secret); otherwise the standard AWS chain.
    pub credentials: Option<(String, String)>,
}

impl AwsTarget {
    /// `region`, through `endpoint` when given, as the static key
    /// `access_key_id` whose secret is in `secret_file` (mode 0600) when
    /// both are given, else as the standard AWS chain finds.
    pub fn with_keys(
        region: &str,
        endpoint: Option<&str>,
        access_key_id: Option<&str>,
        secret_file: Option<&std::path::Path>,
    ) -> crate::Result<AwsTarget> {
        let credentials = match (access_key_id, secret_file) {
            (Some(id), Some(file)) => {
                let secret = crate::secret::read_secret_file(file, "AWS secret key")?;
                let secret = String::from_utf8(secret).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!("{} is not UTF-8", file.display()),
                    )
                })?;
                Some((id.to_string(), secret.trim().to_string()))
            }
            _ => None,
        };
        Ok(AwsTarget {
            region: region.to_string(),
            endpoint: endpoint.map(str::to_string),
            credentials,
        })
    }
}

/// Attempts per call, throttling and 5xx answers included.
pub const ATTEMPTS: u32 = 5;

/// The shared SDK configuration for `target`: bounded calls, standard
/// retries with exponential backoff and jitter.
pub async fn sdk_config(target: &AwsTarget) -> aws_config::SdkConfig {
    // A control plane that stops answering must not hang a failover step:
    // each attempt gives up, and the whole call within a bound.
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(45))
        .build();
    let retries = aws_config::retry::RetryConfig::standard()
        .with_max_attempts(ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(5));
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(target.region.clone()))
        .timeout_config(timeouts)
        .retry_config(retries);
    if let Some(endpoint) = &target.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some((id, secret)) = &target.credentials {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            id.clone(),
            secret.clone(),
            None,
            None,
            "seawall-config",
        ));
    }
    loader.load().await
}

/// Error codes AWS answers a missing permission with.
const DENIED: [&str; 5] = [
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthorizationError",
    "NotAuthorized",
];

/// Error codes that say the call was throttled (the SDK retried already).
const THROTTLED: [&str; 4] = [
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
];

/// The error for a failed call of `action` ("rds:PromoteReadReplica") on
/// `resource` (an ARN, or "*"): a refusal names the policy statement to add.
pub fn call_failed<E>(action: &str, resource: &str, e: &E) -> Error
where
    E: ProvideErrorMetadata + std::fmt::Display + std::fmt::Debug,
{
    let code = e.code().unwrap_or_default();
    let message = e.message().map(str::to_string).unwrap_or_else(|| {
        // The SDK's Display is terse ("dispatch failure"); its Debug form
        // carries the cause (a refused connection, a timeout).
        let debug = format!("{e:?}");
        let short: String = debug.chars().take(300).collect();
        format!("{e}: {short}")
    });
    if DENIED.contains(&code) {
        return Error::new(
            ErrorKind::Denied,
            format!(
                "{action} was refused ({code}): the caller's IAM policy needs {}",
                statement(action, resource)
            ),
        );
    }
    let kind = if THROTTLED.contains(&code) || code.is_empty() {
        ErrorKind::Unreachable
    } else {
        ErrorKind::Conflict
    };
    let throttled = if THROTTLED.contains(&code) {
        format!(" (throttled {ATTEMPTS} times in a row)")
    } else {
        String::new()
    };
    let code = if code.is_empty() {
        String::new()
    } else {
        format!(" ({code})")
    };
    Error::new(kind, format!("{action}{code} failed{throttled}: {message}"))
}

/// The IAM policy statement that allows `action` on `resource` (one ARN,
/// or a JSON list of them), as JSON.
pub fn statement(action: &str, resource: &str) -> String {
    let resource = if resource.starts_with('[') {
        resource.to_string()
    } else {
        format!("\"{resource}\"")
    };
    format!(r#"{{"Effect": "Allow", "Action": "{action}", "Resource": {resource}}}"#)
}

/// Whether `source` (an identifier or an ARN, as RDS writes a replica's
/// source) names the resource `id` (an identifier or an ARN).
pub fn names_instance(source: &str, id: &str) -> bool {
    let last = |s: &str| s.rsplit(':').next().unwrap_or(s).to_string();
    if source.starts_with("arn:") && id.starts_with("arn:") {
        return source == id;
    }
    last(source) == last(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::error::ErrorMetadata;

    #[derive(Debug)]
    struct Failed(ErrorMetadata);

    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "service error")
        }
    }

    impl ProvideErrorMetadata for Failed {
        fn meta(&self) -> &ErrorMetadata {
            &self.0
        }
    }

    fn failed(code: &str, message: &str) -> Failed {
        Failed(ErrorMetadata::builder().code(code).message(message).build())
    }

    #[test]
    fn a_refusal_names_the_action_and_the_statement_that_grants_it() {
        let e = call_failed(
            "rds:PromoteReadReplica",
            "arn:aws:rds:us-east-1:123456789012:db:orders-east",
            &failed("AccessDenied", "User is not authorized"),
        );
        assert_eq!(e.kind(), ErrorKind::Denied);
        let text = e.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(
            text.contains(r#"{"Effect": "Allow", "Action": "rds:PromoteReadReplica", "Resource": "arn:aws:rds:us-east-1:123456789012:db:orders-east"}"#),
            "{text}"
        );
    }

    #[test]
    fn throttling_is_worth_another_try_and_a_refused_state_is_not() {
        let e = call_failed(
            "rds:DescribeDBInstances",
            "*",
            &failed("Throttling", "Rate exceeded"),
        );
        assert!(e.kind().is_retryable());
        assert!(e.to_string().contains("throttled 5 times"), "{e}");
        let e = call_failed(
            "rds:PromoteReadReplica",
            "*",
            &failed("InvalidDBInstanceState", "not a read replica"),
        );
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(e.to_string().contains("not a read replica"), "{e}");
    }

    #[test]
    fn a_source_names_an_instance_by_identifier_or_arn() {
        let arn = "arn:aws:rds:us-west-2:123456789012:db:orders-west";
        assert!(names_instance(arn, "orders-west"));
        assert!(names_instance("orders-west", arn));
        assert!(names_instance(arn, arn));
        assert!(!names_instance(arn, "orders-east"));
        assert!(!names_instance(
            arn,
            "arn:aws:rds:eu-west-1:123456789012:db:orders-west"
        ));
    }
}
