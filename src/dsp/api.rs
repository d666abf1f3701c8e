//! The wire: the two calls the function makes (Login with Amazon's token grant and a POST to an
//! endpoint of the advertiser's DSP account), behind [`DspApi`], with the reqwest implementation.
//! What an answer means is decided in `answer`, the same for every implementation.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

use super::credentials::Secret;
use crate::domain::{describe, Cause};
use crate::store::BoxFuture;

/// An endpoint of the DSP Conversions API, under `{api}/accounts/{advertiserId}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `dspAmazonIngestConversionData`: events.
    EventData,
    /// The advertiser's conversion definitions, a page at a time.
    ListDefinitions,
    /// User data deletion: the conversion events of the people named.
    Delete,
}

impl Endpoint {
    /// The path after `/accounts/{advertiserId}`.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::EventData => "/dsp/conversionDefinitions/eventData",
            Endpoint::ListDefinitions => "/dsp/conversionDefinitions/list",
            Endpoint::Delete => "/dsp/conversionDefinitions/delete",
        }
    }

    /// The media type of `Content-Type` and `Accept`.
    pub fn media_type(self) -> &'static str {
        match self {
            Endpoint::EventData => "application/vnd.dspconversioneventimport.v1+json",
            Endpoint::ListDefinitions => "application/vnd.dspconversiondefinition.v1+json",
            Endpoint::Delete => "application/vnd.dspuserdeletionrequest.v1+json",
        }
    }
}

/// Who calls: what every DSP request carries besides its body.
#[derive(Clone, Debug)]
pub struct Caller<'a> {
    /// API base URL: scheme, host and port.
    pub api_url: &'a str,
    /// Bearer token.
    pub token: &'a Secret,
    /// `Amazon-Advertising-API-ClientId`.
    pub client_id: &'a Secret,
    /// `Amazon-Advertising-API-Scope`.
    pub profile_id: Option<&'a str>,
    /// `Amazon-Ads-AccountId`, and the account in the path.
    pub advertiser_id: &'a str,
}

impl Caller<'_> {
    /// The full URL of `endpoint` for this advertiser.
    pub fn url(&self, endpoint: Endpoint) -> String {
        format!(
            "{}/accounts/{}{}",
            self.api_url,
            percent_encoding::utf8_percent_encode(
                self.advertiser_id,
                percent_encoding::NON_ALPHANUMERIC
            ),
            endpoint.path()
        )
    }
}

/// The refresh-token grant's form.
#[derive(Clone, Debug)]
pub struct Grant<'a> {
    /// The token endpoint.
    pub url: &'a str,
    /// `refresh_token`.
    pub refresh_token: &'a Secret,
    /// `client_id`.
    pub client_id: &'a Secret,
    /// `client_secret`.
    pub client_secret: &'a Secret,
}

/// An HTTP answer, as far as the function reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// `Retry-After`, in seconds or as an HTTP-date, as a wait from now.
    pub retry_after: Option<Duration>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A reply with `status` and `body`.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            retry_after: None,
            body: body.into(),
        }
    }
}

/// Login with Amazon and the DSP API. `Err` is a call that got no answer (network, timeout).
pub trait DspApi: Send + Sync {
    /// Posts the refresh-token grant.
    fn token<'a>(
        &'a self,
        grant: Grant<'a>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Reply, Cause>>;

    /// Posts `body` to `endpoint` of the caller's account.
    fn post<'a>(
        &'a self,
        endpoint: Endpoint,
        caller: Caller<'a>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Reply, Cause>>;
}

/// The real API over HTTPS. The client is built at its first use: building it loads the
/// system's root certificates (several milliseconds), which a cold start should not pay before
/// an event needs delivering (dry runs and all-rejected batches never do).
#[derive(Default)]
pub struct Https(OnceLock<reqwest::Client>);

impl Https {
    fn client(&self) -> Result<&reqwest::Client, Cause> {
        if let Some(client) = self.0.get() {
            return Ok(client);
        }
        let built = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(50))
            .build()
            .map_err(|e| {
                Cause::Internal(format!("cannot build the HTTPS client: {}", describe(&e)))
            })?;
        Ok(self.0.get_or_init(|| built))
    }

    async fn send(builder: reqwest::RequestBuilder) -> Result<Reply, Cause> {
        let response = builder.send().await.map_err(|e| network(&e))?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers(), SystemTime::now());
        let body = response.bytes().await.map_err(|e| network(&e))?;
        Ok(Reply {
            status,
            retry_after,
            body: body.to_vec(),
        })
    }
}

impl DspApi for Https {
    fn token<'a>(
        &'a self,
        grant: Grant<'a>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Reply, Cause>> {
        Box::pin(async move {
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", grant.refresh_token.expose()),
                ("client_id", grant.client_id.expose()),
                ("client_secret", grant.client_secret.expose()),
            ];
            let builder = self.client()?.post(grant.url).form(&form).timeout(timeout);
            Self::send(builder).await
        })
    }

    fn post<'a>(
        &'a self,
        endpoint: Endpoint,
        caller: Caller<'a>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Reply, Cause>> {
        Box::pin(async move {
            let media = endpoint.media_type();
            let mut builder = self
                .client()?
                .post(caller.url(endpoint))
                .header(CONTENT_TYPE, media)
                .header(ACCEPT, media)
                .header(AUTHORIZATION, format!("Bearer {}", caller.token.expose()))
                .header("Amazon-Advertising-API-ClientId", caller.client_id.expose())
                .header("Amazon-Ads-AccountId", caller.advertiser_id)
                .timeout(timeout)
                .body(body);
            if let Some(profile) = caller.profile_id {
                builder = builder.header("Amazon-Advertising-API-Scope", profile);
            }
            Self::send(builder).await
        })
    }
}

fn network(e: &reqwest::Error) -> Cause {
    let kind = if e.is_timeout() {
        "timeout"
    } else {
        "network error"
    };
    Cause::Network(format!("{kind}: {}", describe(e)))
}

/// The longest `Retry-After` honoured.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// `Retry-After` as a wait from `now`: delay-seconds, or an HTTP-date (a date in the past is
/// no wait at all).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(RETRY_AFTER_CAP.as_secs_f64())));
    }
    let date = OffsetDateTime::parse(value, &Rfc2822).ok()?;
    let now = OffsetDateTime::from(now);
    let wait = (date - now).max(time::Duration::ZERO);
    Some(Duration::try_from(wait).ok()?.min(RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn header(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_in_seconds_or_as_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(retry_after(&header("2"), now), Some(Duration::from_secs(2)));
        assert_eq!(
            retry_after(&header("0.5"), now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            retry_after(&header("Sun, 06 Nov 1994 08:49:40 GMT"), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&header("Sun, 06 Nov 1994 08:49:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&header("99999999"), now), Some(RETRY_AFTER_CAP));
        assert_eq!(retry_after(&header("-1"), now), None);
        assert_eq!(retry_after(&header("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn urls_encode_the_advertiser() {
        let token = Secret::new("t");
        let caller = Caller {
            api_url: "http://127.0.0.1:1",
            token: &token,
            client_id: &token,
            profile_id: None,
            advertiser_id: "a/b",
        };
        assert_eq!(
            caller.url(Endpoint::EventData),
            "http://127.0.0.1:1/accounts/a%2Fb/dsp/conversionDefinitions/eventData"
        );
        assert_eq!(
            caller.url(Endpoint::Delete),
            "http://127.0.0.1:1/accounts/a%2Fb/dsp/conversionDefinitions/delete"
        );
        assert_eq!(
            Endpoint::Delete.media_type(),
            "application/vnd.dspuserdeletionrequest.v1+json"
        );
    }
}
