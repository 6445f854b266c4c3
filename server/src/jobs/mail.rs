//! Delivers the e-mail outbox over SMTP: claims due rows (leased, so other workers skip
//! them), sends each outside any transaction, then marks it sent, schedules a retry with
//! backoff, or gives it up (see `fluxi_core::outbox` and docs/mail-outbox.md).

use std::time::Duration;

use anyhow::Context;

use fluxi_core::clock::SharedClock;
use fluxi_core::db::Pool;
use fluxi_core::outbox::{self, Failure};
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(smtp_url: &str, from: &str) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .context("SMTP_URL is not a valid SMTP URL")?
            .timeout(Some(Duration::from_secs(10)))
            .build();
        let from = from.parse().context("FLUXI_MAIL_FROM is not a valid address")?;
        Ok(Self { transport, from })
    }

    async fn send(&self, mail: &outbox::OutboxEmail) -> Result<(), (String, Failure)> {
        // An address our rules accepted but that an SMTP envelope cannot carry will never
        // be deliverable.
        let to: Mailbox = mail.recipient.parse().map_err(|e| (format!("bad recipient: {e}"), Failure::Permanent))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .body(mail.body.clone())
            .map_err(|e| (e.to_string(), Failure::Permanent))?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| {
            let text = e.to_string();
            let failure = outbox::failure_for_smtp_reply(e.status().map(u16::from), &text);
            (text, failure)
        })
    }
}

/// Delivers what is due now; returns how many mails were sent. The SMTP conversations
/// happen with no database connection held.
pub async fn deliver_due(pool: &Pool, clock: &SharedClock, mailer: &Mailer) -> anyhow::Result<usize> {
    let due = {
        let mut conn = pool.get().await.context("no database connection")?;
        outbox::claim_due(&mut conn, clock.now(), outbox::CLAIM_BATCH).await.context("claiming due mails")?
    };
    let mut sent = 0;
    for mail in &due {
        let outcome = mailer.send(mail).await;
        let now = clock.now();
        let mut conn = pool.get().await.context("no database connection")?;
        match outcome {
            Ok(()) => {
                outbox::mark_sent(&mut conn, mail.id, now).await.context("marking a mail sent")?;
                sent += 1;
            }
            Err((e, failure)) => {
                let gives_up = failure == Failure::Permanent || mail.attempts >= outbox::MAX_ATTEMPTS;
                if gives_up {
                    tracing::error!(mail = %mail.id, attempts = mail.attempts, error = %e, "mail delivery failed; given up");
                } else {
                    tracing::warn!(mail = %mail.id, attempts = mail.attempts, error = %e, "mail delivery failed; will retry");
                }
                outbox::mark_failed(&mut conn, mail, &e, failure, now).await.context("recording a failed delivery")?;
            }
        }
    }
    Ok(sent)
}

pub fn spawn_worker(pool: Pool, clock: SharedClock, mailer: Mailer, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = deliver_due(&pool, &clock, &mailer).await {
                tracing::warn!(error = format!("{e:#}"), "outbox delivery round failed");
            }
        }
    })
}
