//! Explicit topic creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach the broker at {brokers}: {message}")]
    Connect { brokers: String, message: String },
    #[error("cannot create topic `{topic}`: {message}")]
    Create { topic: String, message: String },
}

/// Creates the topics that do not exist yet (existing ones are left alone).
pub async fn ensure_topics(brokers: &str, topics: &[(&str, i32)]) -> Result<(), AdminError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| AdminError::Connect { brokers: brokers.into(), message: e.to_string() })?;
    let new: Vec<NewTopic<'_>> = topics.iter().map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(new.iter(), &opts)
        .await
        .map_err(|e| AdminError::Connect { brokers: brokers.into(), message: e.to_string() })?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(AdminError::Create { topic, message: code.to_string() }),
        }
    }
    Ok(())
}
