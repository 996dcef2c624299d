//! A producer whose sends can be awaited: the dead-letter writer and the `kafka` target both
//! need "produce these records, then know that every one was acked (`acks=all`)".

use fleetstream_kafka::{
    DeliveryHandler, DeliveryReport, KafkaError, KafkaProducer, OutRecord, ProducerSettings,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Wait before re-sending a record the client's queue had no room for (never dropped).
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);

/// The outcome of one send, once its delivery report arrives.
pub(crate) type Ack = oneshot::Receiver<Result<(), String>>;

/// Sends each delivery report back to whoever awaits it.
struct Reply;

impl DeliveryHandler for Reply {
    type Token = oneshot::Sender<Result<(), String>>;
    fn delivered(&self, token: Self::Token, report: DeliveryReport<'_>) {
        let _ = token.send(
            report
                .result
                .map_err(|f| format!("{}: {}", f.class, f.message)),
        );
    }
}

/// An idempotent `acks=all` producer with awaitable acks.
pub(crate) struct AckedProducer {
    producer: KafkaProducer<Reply>,
}

impl AckedProducer {
    pub(crate) fn new(settings: &ProducerSettings) -> Result<Self, KafkaError> {
        Ok(AckedProducer {
            producer: KafkaProducer::new(settings, Arc::new(Reply))?,
        })
    }

    /// Enqueues `record`, waiting while librdkafka's queue is full; returns its [`Ack`].
    pub(crate) async fn send(&self, record: OutRecord<'_>) -> Result<Ack, String> {
        let (mut token, rx) = oneshot::channel();
        loop {
            match self.producer.send(record, token) {
                Ok(()) => return Ok(rx),
                Err((KafkaError::QueueFull, back)) => {
                    token = back;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((e, _)) => return Err(e.to_string()),
            }
        }
    }
}

/// Awaits every ack (all of them, so no report outlives the call unobserved); the first
/// failure, if any.
pub(crate) async fn all_acked(acks: Vec<Ack>) -> Result<(), String> {
    let mut first_error = None;
    for a in acks {
        let outcome = match a.await {
            Ok(r) => r,
            Err(_) => Err("delivery report lost".to_string()),
        };
        if let Err(e) = outcome {
            first_error = first_error.or(Some(e));
        }
    }
    first_error.map_or(Ok(()), Err)
}
