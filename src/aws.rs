//! The AWS implementations of the store traits: S3, SQS and Secrets Manager through the SDK,
//! configured from `aws-config` defaults (so `AWS_REGION` and `AWS_ENDPOINT_URL` work as usual).

use std::path::Path;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use tokio::sync::OnceCell;
use tokio_util::io::SyncIoBridge;

use crate::domain::describe;
use crate::store::{
    BoxFuture, MessageQueue, Object, ObjectStore, OpenError, Part, SecretError, SecretStore,
    StoreError,
};

/// Whether an AWS failure may pass by itself (a timeout, a network failure, throttling, a 5xx):
/// the one place that tells transient AWS failures from those that need a person (access denied,
/// a missing resource, a bad request).
pub fn is_transient<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let throttled = service
                .err()
                .code()
                .is_some_and(|c| c.contains("Throttl") || c.contains("TooManyRequests"));
            status == 429 || status >= 500 || throttled
        }
        _ => false,
    }
}

/// The SDK clients, built at their first use and kept across warm invocations. Building them
/// reads the configuration chain and sets up TLS (several milliseconds), which a cold start
/// should not pay before an event needs S3, SQS or Secrets Manager.
#[derive(Debug, Default)]
pub struct Aws {
    clients: OnceCell<Clients>,
}

#[derive(Debug)]
struct Clients {
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    secrets: aws_sdk_secretsmanager::Client,
}

impl Clients {
    fn new(shared: &aws_config::SdkConfig) -> Self {
        // An emulator (moto, LocalStack) behind AWS_ENDPOINT_URL serves buckets by path.
        let s3 = aws_sdk_s3::config::Builder::from(shared)
            .force_path_style(shared.endpoint_url().is_some())
            .build();
        Self {
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::new(shared),
            secrets: aws_sdk_secretsmanager::Client::new(shared),
        }
    }
}

impl Aws {
    /// Clients from the default configuration chain (`AWS_REGION`, `AWS_ENDPOINT_URL`, …),
    /// built when first used.
    pub fn from_env() -> Self {
        Self::default()
    }

    /// Clients from an explicit shared configuration, built now.
    pub fn from_config(shared: &aws_config::SdkConfig) -> Self {
        Self {
            clients: OnceCell::new_with(Some(Clients::new(shared))),
        }
    }

    async fn clients(&self) -> &Clients {
        self.clients
            .get_or_init(|| async {
                let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                Clients::new(&shared)
            })
            .await
    }
}

impl ObjectStore for Aws {
    fn open<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        part: Part<'a>,
    ) -> BoxFuture<'a, Result<Object, OpenError>> {
        Box::pin(async move {
            let sent = self
                .clients()
                .await
                .s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .set_if_match(part.if_match.map(|e| format!("\"{e}\"")))
                .set_range((part.from > 0).then(|| format!("bytes={}-", part.from)))
                .send()
                .await;
            let out = match sent {
                Ok(out) => out,
                Err(e) => {
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    return match e.as_service_error() {
                        Some(GetObjectError::NoSuchKey(_)) => Err(OpenError::NotFound),
                        _ if status == Some(404) => Err(OpenError::NotFound),
                        _ if status == Some(412) => Err(OpenError::Changed),
                        _ if status == Some(416) => Err(OpenError::PastTheEnd),
                        _ if is_transient(&e) => Err(OpenError::Failed(describe(&e))),
                        _ => Err(OpenError::Denied(describe(&e))),
                    };
                }
            };
            let etag = out.e_tag().map(|s| s.trim_matches('"').to_owned());
            let revision = out.version_id().map(str::to_owned).or_else(|| etag.clone());
            Ok(Object {
                content_type: out.content_type().map(str::to_owned),
                content_encoding: out.content_encoding().map(str::to_owned),
                revision,
                etag,
                reader: Box::new(SyncIoBridge::new(Box::pin(out.body.into_async_read()))),
            })
        })
    }

    fn put_file<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let body = ByteStream::from_path(path)
                .await
                .map_err(|e| StoreError(describe(&e)))?;
            self.clients()
                .await
                .s3
                .put_object()
                .bucket(bucket)
                .key(key)
                .content_type("application/x-ndjson")
                .body(body)
                .send()
                .await
                .map(drop)
                .map_err(|e| StoreError(describe(&e)))
        })
    }
}

impl MessageQueue for Aws {
    fn send<'a>(
        &'a self,
        queue_url: &'a str,
        body: String,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.clients()
                .await
                .sqs
                .send_message()
                .queue_url(queue_url)
                .message_body(body)
                .send()
                .await
                .map(drop)
                .map_err(|e| StoreError(describe(&e)))
        })
    }
}

impl SecretStore for Aws {
    fn get<'a>(&'a self, secret_id: &'a str) -> BoxFuture<'a, Result<String, SecretError>> {
        Box::pin(async move {
            let out = self
                .clients()
                .await
                .secrets
                .get_secret_value()
                .secret_id(secret_id)
                .send()
                .await
                .map_err(|e| match e.as_service_error() {
                    Some(GetSecretValueError::ResourceNotFoundException(_)) => {
                        SecretError::NotFound
                    }
                    _ if is_transient(&e) => SecretError::Failed(describe(&e)),
                    _ => SecretError::Denied(describe(&e)),
                })?;
            out.secret_string()
                .map(str::to_owned)
                .ok_or(SecretError::NotString)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::config::http::HttpResponse;
    use aws_sdk_s3::primitives::SdkBody;

    fn service(status: u16, code: &str) -> SdkError<GetSecretValueError> {
        let meta = aws_sdk_s3::error::ErrorMetadata::builder()
            .code(code)
            .build();
        let err = GetSecretValueError::generic(meta);
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(err, raw)
    }

    #[test]
    fn transient_aws_failures_are_told_from_the_rest() {
        assert!(is_transient(&service(500, "InternalServiceError")));
        assert!(is_transient(&service(400, "ThrottlingException")));
        assert!(is_transient(&service(429, "TooManyRequestsException")));
        assert!(!is_transient(&service(400, "AccessDeniedException")));
        assert!(!is_transient(&service(403, "AccessDenied")));
        assert!(!is_transient(&service(400, "DecryptionFailure")));
        let timeout: SdkError<GetSecretValueError> = SdkError::timeout_error("slow");
        assert!(is_transient(&timeout));
    }
}
