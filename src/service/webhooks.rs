//! Webhooks (`domain::webhooks`): subscriptions (admins add and remove them), the outbox the
//! scoring step writes deliveries to (`outbox`), and the sender that POSTs them, signed,
//! retrying with backoff for 24 hours. Delivery is at least once: a receiver dedupes by the
//! payload's `id`.

use super::accounts::{random_token, Actor};
use super::stages::STAGES_KEY;
use super::store::{DynStore, NewAuditEntry, StoreError};
use super::{now_ms, Service, ServiceError, ServiceResult};
use crate::domain::stages::{default_stages, parse_stages};
use crate::domain::time::Millis;
use crate::domain::webhooks::{
    after_attempt, parse_webhook, CreatedWebhook, Delivery, DeliveryState, Outbox, StoredWebhook, Webhook, MAX_WEBHOOKS,
};
use crate::domain::FieldError;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// Deliveries sent at once, each held for `HOLD` (a sender that dies leaves them due then).
const PER_ROUND: usize = 16;
const HOLD: Duration = Duration::from_secs(60);
/// A receiver gets this long to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// With nothing due, the outbox is looked at again this soon.
const IDLE: Duration = Duration::from_millis(500);
/// Deliveries listed per subscription.
const LISTED: usize = 200;
/// Deliveries done with (delivered or failed) are kept this long, then forgotten; checked
/// this often.
const KEEP_DONE_MS: Millis = 7 * 86_400_000;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The subscriptions and stage ladder the scoring step writes deliveries with.
pub async fn outbox(store: &DynStore) -> Result<Outbox, StoreError> {
    let subscriptions: Vec<Webhook> = store.webhooks().await?.into_iter().map(|w| w.hook).collect();
    if subscriptions.is_empty() {
        return Ok(Outbox::default());
    }
    let ladder = match store.setting(STAGES_KEY).await? {
        None => default_stages(),
        Some(raw) => parse_stages(&raw).unwrap_or_else(|_| default_stages()),
    };
    Ok(Outbox { subscriptions, ladder })
}

/// `Leadscore-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, unix_seconds: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(format!("{unix_seconds}.").as_bytes());
    mac.update(body.as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_seconds},v1={hex}")
}

impl Service {
    pub async fn webhooks(&self) -> ServiceResult<Vec<Webhook>> {
        Ok(self.store.webhooks().await?.into_iter().map(|w| w.hook).collect())
    }

    /// Adds a subscription; the answer carries its secret, the only time it is shown.
    pub async fn create_webhook(&self, raw: &serde_json::Value, actor: &Actor) -> ServiceResult<CreatedWebhook> {
        let draft = parse_webhook(raw).map_err(ServiceError::Invalid)?;
        if self.store.webhooks().await?.len() >= MAX_WEBHOOKS {
            return Err(ServiceError::Conflict(FieldError::new(
                "url",
                format!("there are {MAX_WEBHOOKS} webhooks already (the most there may be); delete one first"),
            )));
        }
        let hook = Webhook { id: random_token(9), url: draft.url, events: draft.events, created_at: now_ms() };
        let secret = format!("whsec_{}", random_token(24));
        self.store.create_webhook(StoredWebhook { hook: hook.clone(), secret: secret.clone() }).await?;
        self.audit_webhook("webhook.create", &hook, actor).await;
        Ok(CreatedWebhook { hook, secret })
    }

    pub async fn delete_webhook(&self, id: &str, actor: &Actor) -> ServiceResult<Webhook> {
        let hook = self.find_webhook(id).await?;
        if !self.store.delete_webhook(id).await? {
            return Err(ServiceError::NotFound);
        }
        self.audit_webhook("webhook.delete", &hook, actor).await;
        Ok(hook)
    }

    pub async fn webhook_deliveries(&self, id: &str) -> ServiceResult<Vec<Delivery>> {
        self.find_webhook(id).await?;
        Ok(self.store.deliveries(id, LISTED).await?)
    }

    /// Sends a delivery again now (delivered, failed or waiting alike).
    pub async fn redeliver(&self, id: &str, delivery: i64, actor: &Actor) -> ServiceResult<()> {
        let hook = self.find_webhook(id).await?;
        if !self.store.redeliver(id, delivery, now_ms()).await? {
            return Err(ServiceError::NotFound);
        }
        self.audit_webhook(&format!("webhook.redeliver {delivery}"), &hook, actor).await;
        self.wake_webhooks.notify_one();
        Ok(())
    }

    pub async fn find_webhook(&self, id: &str) -> ServiceResult<Webhook> {
        self.webhooks().await?.into_iter().find(|w| w.id == id).ok_or(ServiceError::NotFound)
    }

    async fn audit_webhook(&self, action: &str, hook: &Webhook, actor: &Actor) {
        let entry = NewAuditEntry {
            at: now_ms(),
            actor: actor.principal.actor(),
            action: action.into(),
            target: format!("webhook {} ({})", hook.url, hook.id),
            before: None,
            after: Some(json!({"url": hook.url, "events": hook.events})),
            ip: actor.ip.clone(),
        };
        if let Err(e) = self.store.append_audit(entry).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// One round: sends the deliveries due now; how many it sent.
    pub async fn send_due(&self, client: &reqwest::Client, retry_ms: Millis) -> ServiceResult<usize> {
        let now = now_ms();
        let until = now + HOLD.as_millis() as Millis;
        let due = self.store.claim_deliveries(now, until, PER_ROUND).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let hooks = self.store.webhooks().await?;
        let sends = due.iter().map(|d| {
            let hook = hooks.iter().find(|h| h.hook.id == d.webhook_id);
            send(client, hook, d, retry_ms)
        });
        for (delivery, attempt) in due.iter().zip(futures::future::join_all(sends).await) {
            if attempt.state != DeliveryState::Delivered {
                tracing::info!(delivery = delivery.id, webhook = %delivery.webhook_id, error = ?attempt.error,
                    status = ?attempt.status, "webhook delivery failed");
            }
            // Redelivered or deleted meanwhile: what the admin did stands.
            if !self.store.record_attempt(delivery.id, until, attempt).await? {
                tracing::info!(
                    delivery = delivery.id,
                    "webhook delivery changed while it was sent; its attempt is not recorded"
                );
            }
        }
        Ok(due.len())
    }
}

/// One attempt at a delivery: POSTs its payload, signed with its subscription's secret.
async fn send(
    client: &reqwest::Client,
    hook: Option<&StoredWebhook>,
    d: &Delivery,
    retry_ms: Millis,
) -> crate::domain::webhooks::Attempt {
    let now = now_ms();
    let attempts = d.attempts + 1;
    let Some(hook) = hook else {
        let mut gone = after_attempt(d.created_at, attempts, now, None, Some("webhook deleted".into()), retry_ms);
        (gone.state, gone.next_at) = (DeliveryState::Failed, None);
        return gone;
    };
    let unix = now.div_euclid(1000);
    let request = client
        .post(&hook.hook.url)
        .header("content-type", "application/json")
        .header("leadscore-signature", signature(&hook.secret, unix, &d.payload))
        .header("leadscore-delivery", d.id.to_string())
        .body(d.payload.clone());
    let (status, error) = match request.send().await {
        Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
        Ok(r) => (Some(r.status().as_u16()), Some(format!("the receiver answered {}", r.status()))),
        Err(e) => (None, Some(describe(e))),
    };
    after_attempt(d.created_at, attempts, now_ms(), status, error, retry_ms)
}

/// Why a request failed, without its URL (which may carry credentials or tokens).
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {} s", TIMEOUT.as_secs())
    } else if e.is_connect() {
        "cannot connect to the receiver".into()
    } else {
        format!("request failed: {}", e.without_url())
    }
}

/// Sends due deliveries until shutdown: back to back while there are more, else every
/// `IDLE` or as soon as something asks (a redeliver).
pub async fn run(service: Arc<Service>, retry_ms: u64, mut stop: tokio::sync::watch::Receiver<bool>) {
    let client = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        // A receiver names its final address: following redirects would let one point the
        // sender anywhere.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Leadscore-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => return tracing::error!(error = %e, "webhooks: cannot build an HTTP client; nothing will be sent"),
    };
    let wake = service.wake_webhooks.clone();
    let mut pruned_at: Option<std::time::Instant> = None;
    loop {
        if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            pruned_at = Some(std::time::Instant::now());
            match service.store.prune_deliveries(now_ms() - KEEP_DONE_MS).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deliveries = n, "webhooks: forgot deliveries older than a week"),
                Err(e) => tracing::warn!(error = %e, "webhooks: cannot prune old deliveries"),
            }
        }
        let pause = match service.send_due(&client, retry_ms as Millis).await {
            Ok(n) if n >= PER_ROUND => Duration::ZERO,
            Ok(_) => IDLE,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot read the outbox; retrying");
                Duration::from_secs(2)
            }
        };
        if pause.is_zero() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_time_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        let sig = signature("whsec_test", 1_700_000_000, r#"{"a":1}"#);
        assert_eq!(sig, "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789");
    }
}
