//! The advertiser's conversion definitions, listed from the DSP (every page) at the first
//! invocation that needs them and kept for `DEFINITIONS_CACHE_TTL_SECONDS` across warm
//! invocations. Credentials that may not list them (403, 404) fall back to resolving ids and the
//! default only, with one warning per cold start.

use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::json;

use super::answer::{classify_with, Answer};
use super::{Endpoint, Reply, Session, Stop};
use crate::domain::Cause;
use crate::event::{Definition, DefinitionSource, Definitions};

/// Definitions asked for per page.
const PAGE: u32 = 100;
/// Pages followed at most (a `nextToken` that never ends).
const MAX_PAGES: usize = 1000;

/// What the cache holds: the definitions, or that they cannot be listed.
#[derive(Clone, Debug)]
pub enum Listed {
    /// The advertiser's definitions.
    Definitions(Arc<Definitions>),
    /// The credentials may not list them: resolve without.
    Refused,
}

/// One page of the `/list` response.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    #[serde(default)]
    conversion_definitions: Vec<Listing>,
    #[serde(default)]
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listing {
    conversion_definition_id: serde_json::Value,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    conversion_type: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

impl Page {
    /// The page's definitions and its `nextToken`.
    pub fn into_parts(self) -> (Vec<Definition>, Option<String>) {
        let list = self
            .conversion_definitions
            .into_iter()
            .map(|l| Definition {
                id: match l.conversion_definition_id {
                    serde_json::Value::String(s) => s.into(),
                    other => other.to_string().into(),
                },
                name: l.name.unwrap_or_default().into(),
                conversion_type: l.conversion_type,
                source: l.source.as_deref().map(DefinitionSource::parse),
            })
            .collect();
        (list, self.next_token.filter(|t| !t.is_empty()))
    }
}

/// Reads a saved `/list` response (one page, as `dsp-conversions-check --definitions` takes it).
pub fn parse(bytes: &[u8]) -> serde_json::Result<Definitions> {
    let page: Page = serde_json::from_slice(bytes)?;
    Ok(Definitions::new(page.into_parts().0))
}

impl Session {
    /// The advertiser's definitions: cached, or listed now. `Err` when listing failed for a
    /// reason that may pass (the events that wait on them are redelivered).
    pub async fn definitions(&self) -> Result<Listed, Cause> {
        let ttl = self.dsp.settings.definitions_ttl;
        let mut cached = self.dsp.definitions.lock().await;
        if let Some((listed, at)) = cached.as_ref() {
            if at.elapsed() < ttl {
                return Ok(listed.clone());
            }
        }
        let listed = match self.list_all().await {
            Ok(Some(list)) => Listed::Definitions(Arc::new(Definitions::new(list))),
            Ok(None) => {
                if !self
                    .dsp
                    .refusal_warned
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(
                        "the DSP refused to list the advertiser's conversion definitions (HTTP 403/404): \
                         resolving conversion definitions by id and DSP_DEFAULT_CONVERSION_DEFINITION_ID only, \
                         sources from the events or DSP_DEFAULT_SOURCE"
                    );
                }
                Listed::Refused
            }
            Err(Stop::Redeliver(cause) | Stop::Fail(cause)) => return Err(cause),
        };
        *cached = Some((listed.clone(), Instant::now()));
        Ok(listed)
    }

    /// Every page; `None` when the credentials may not list definitions.
    async fn list_all(&self) -> Result<Option<Vec<Definition>>, Stop> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut body = json!({"maxResults": PAGE});
            if let Some(t) = &token {
                body["nextToken"] = t.as_str().into();
            }
            let page = self
                .request(
                    Endpoint::ListDefinitions,
                    body.to_string().into_bytes(),
                    read_page,
                    |_| false,
                )
                .await?;
            let page = match page {
                super::Sent::Done(Some(page)) => page,
                super::Sent::Done(None) => return Ok(None),
                super::Sent::BadRequest(message) => {
                    return Err(Stop::Fail(Cause::Refused(format!(
                        "the DSP refused to list conversion definitions: {message}"
                    ))))
                }
            };
            let (list, next) = page.into_parts();
            all.extend(list);
            match next {
                Some(next) => token = Some(next),
                None => return Ok(Some(all)),
            }
        }
        Err(Stop::Redeliver(Cause::DspFailed(
            "the list of conversion definitions does not end".into(),
        )))
    }
}

/// A `/list` answer: a page, `None` for 403 and 404 (no permission to list), the rest as usual.
fn read_page(reply: &Reply) -> Answer<Option<Page>> {
    match reply.status {
        403 | 404 => Answer::Done(None),
        _ => classify_with(reply, |body| {
            serde_json::from_slice::<Page>(body).ok().map(Some)
        }),
    }
}
