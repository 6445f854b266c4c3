//! Delivers the e-mail outbox over SMTP: claims due rows (skipping rows another worker
//! holds), sends each, marks it sent or schedules a retry with backoff.

use std::time::Duration;

use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::AsyncConnection;
use fluxi_core::clock::SharedClock;
use fluxi_core::db::Pool;
use fluxi_core::outbox;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(smtp_url: &str, from: &str) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|e| format!("SMTP_URL is not a valid SMTP URL: {e}"))?
            .timeout(Some(Duration::from_secs(10)))
            .build();
        let from = from.parse().map_err(|e| format!("FLUXI_MAIL_FROM is not a valid address: {e}"))?;
        Ok(Self { transport, from })
    }

    async fn send(&self, mail: &outbox::OutboxEmail) -> Result<(), String> {
        let to: Mailbox = mail.recipient.parse().map_err(|e| format!("bad recipient: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .body(mail.body.clone())
            .map_err(|e| e.to_string())?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Delivers what is due now; returns how many mails were sent.
pub async fn deliver_due(pool: &Pool, clock: &SharedClock, mailer: &Mailer) -> Result<usize, String> {
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    let now = clock.now();
    conn.transaction::<usize, diesel::result::Error, _>(|c| {
        async move {
            let due = outbox::claim_due(c, now, 20).await?;
            let mut sent = 0;
            for mail in &due {
                match mailer.send(mail).await {
                    Ok(()) => {
                        outbox::mark_sent(c, mail.id, now).await?;
                        sent += 1;
                    }
                    Err(e) => {
                        tracing::warn!(mail = %mail.id, attempts = mail.attempts + 1, error = %e, "mail delivery failed; will retry");
                        outbox::mark_failed(c, mail, &e, now).await?;
                    }
                }
            }
            Ok(sent)
        }
        .scope_boxed()
    })
    .await
    .map_err(|e| e.to_string())
}

pub fn spawn_worker(pool: Pool, clock: SharedClock, mailer: Mailer, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = deliver_due(&pool, &clock, &mailer).await {
                tracing::warn!(error = %e, "outbox delivery round failed");
            }
        }
    })
}
