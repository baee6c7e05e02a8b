//! The AWS side of the edge plans: certificates in IAM or ACM, listener
//! certificates on the shared load balancer, CloudFront distributions and
//! Route53 ALIAS records. Every call is idempotent or tolerates a repeat,
//! because a step may run twice.

pub mod alb;
pub mod certificates;
pub mod cloudfront;
pub mod route53;

use std::error::Error as StdError;

use aws_sdk_iam::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::config::AwsConfig;

/// One client per AWS service the broker uses, from one SDK configuration.
pub struct Cloud {
    pub config: AwsConfig,
    pub iam: aws_sdk_iam::Client,
    pub acm: aws_sdk_acm::Client,
    /// CloudFront takes ACM certificates from us-east-1 only.
    pub acm_us_east_1: aws_sdk_acm::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub route53: aws_sdk_route53::Client,
    pub cloudfront: aws_sdk_cloudfront::Client,
}

impl Cloud {
    /// Reads credentials the SDK's usual way (environment, profile, instance
    /// role); endpoint and region from the broker's settings when given.
    pub async fn new(config: &AwsConfig) -> Cloud {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        Cloud {
            config: config.clone(),
            iam: aws_sdk_iam::Client::new(&sdk),
            acm: aws_sdk_acm::Client::new(&sdk),
            acm_us_east_1: aws_sdk_acm::Client::from_conf(
                aws_sdk_acm::config::Builder::from(&sdk)
                    .region(aws_config::Region::new("us-east-1"))
                    .build(),
            ),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&sdk),
            route53: aws_sdk_route53::Client::new(&sdk),
            cloudfront: aws_sdk_cloudfront::Client::new(&sdk),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// AWS answered with an error code.
    #[error("AWS {operation} failed: {code}: {message}")]
    Service {
        operation: &'static str,
        code: String,
        message: String,
    },
    /// No answer, or one we could not read.
    #[error("AWS {operation} failed: {detail}")]
    Transport {
        operation: &'static str,
        detail: String,
    },
    /// AWS answered, but not with what it should have.
    #[error("AWS {operation} answered unexpectedly: {detail}")]
    Unexpected {
        operation: &'static str,
        detail: String,
    },
}

/// Error codes that another attempt will not cure.
const PERMANENT: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "MalformedCertificate",
    "InvalidInput",
    "ValidationError",
    "ValidationException",
    "LimitExceeded",
    "LimitExceededException",
    "TooManyCertificates",
    "CNAMEAlreadyExists",
    "NoSuchHostedZone",
];

impl CloudError {
    pub fn sdk<E, R>(operation: &'static str, e: SdkError<E, R>) -> CloudError
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        match e.code() {
            Some(code) => CloudError::Service {
                operation,
                code: code.to_string(),
                message: e.message().unwrap_or_default().to_string(),
            },
            None => CloudError::Transport {
                operation,
                detail: DisplayErrorContext(&e).to_string(),
            },
        }
    }

    pub fn unexpected(operation: &'static str, detail: impl Into<String>) -> CloudError {
        CloudError::Unexpected {
            operation,
            detail: detail.into(),
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            CloudError::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True when the error is one of these codes.
    pub fn is(&self, codes: &[&str]) -> bool {
        self.code().is_some_and(|c| codes.contains(&c))
    }

    pub fn is_permanent(&self) -> bool {
        self.is(PERMANENT)
    }
}

/// A builder of the SDK refused its input: our bug, not AWS's.
fn built<T>(
    operation: &'static str,
    r: Result<T, aws_sdk_iam::error::BuildError>,
) -> Result<T, CloudError> {
    r.map_err(|e| CloudError::unexpected(operation, format!("request not built: {e}")))
}
