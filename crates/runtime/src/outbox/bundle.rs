//! Bundled outbox rows: the messages one transaction enqueues for a destination, grouped by the
//! partition of their key (a lead), each group one row, one delivery id and one receiver inbox
//! claim. A row per message cost every hop a row insert and delete at the sender and an inbox
//! row at the receiver per message: most of what a delivered activity wrote (BENCHMARKS.md).
//!
//! Order per lead holds because every message about a lead goes to the same partition, and the
//! relay delivers a partition's rows in order. A receiver of bundles treats consecutive
//! messages sharing an id as one message ([`super::inbox::Claimed::admits`]).

use std::collections::HashMap;
use std::hash::Hasher;

use prost::Message;

use super::{DeliveryError, NewMessage, OutboxMessage};

/// Partitions of a bundled destination's keys. More partitions make smaller bundles; fewer
/// make a delivery that keeps failing hold back more leads behind it (a partition waits for
/// its oldest row).
pub const PARTITIONS: u64 = 64;

/// The partition key of the bundles carrying messages about `key`: FNV-1a of its bytes, a hash
/// fixed by its definition, so every replica and every version agree on it.
pub fn partition_of(key: &str) -> String {
    partition_key(partition_number(key))
}

/// The partition `key` falls in.
fn partition_number(key: &str) -> u64 {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(key.as_bytes());
    hasher.finish() % PARTITIONS
}

/// The partition key of partition `number`.
fn partition_key(number: u64) -> String {
    format!("partition-{number:02}")
}

/// A bundled row's payload.
#[derive(Clone, PartialEq, Message)]
struct Bundle {
    #[prost(message, repeated, tag = "1")]
    messages: Vec<Bundled>,
}

/// One message of a bundle.
#[derive(Clone, PartialEq, Message)]
struct Bundled {
    /// The encoded message.
    #[prost(bytes = "vec", tag = "1")]
    payload: Vec<u8>,
    /// The W3C trace context it was produced under, as JSON.
    #[prost(string, tag = "2")]
    trace_context: String,
}

/// An outbox row to insert: one message, or a bundle.
#[derive(Debug)]
pub(super) struct RowToWrite {
    pub destination: &'static str,
    pub message_id: String,
    pub tenant_id: String,
    pub partition_key: String,
    pub payload: Vec<u8>,
    /// The message's trace context, or a bundle's first message's (for the relay's span).
    pub trace_context: String,
    /// How many messages a bundle holds; `None` for one message.
    pub bundled: Option<i32>,
}

impl RowToWrite {
    /// The row of one message, under `trace_context`.
    pub(super) fn single(message: NewMessage, trace_context: String) -> Self {
        Self {
            destination: message.destination,
            message_id: message.message_id,
            tenant_id: message.tenant_id,
            partition_key: message.partition_key,
            payload: message.payload,
            trace_context,
            bundled: None,
        }
    }
}

/// Groups `groups` (messages under their trace context, in enqueue order) into one row per
/// destination, tenant and partition, each with an id of its own and its messages in order.
pub(super) fn bundle(groups: Vec<(String, Vec<NewMessage>)>) -> Vec<RowToWrite> {
    // The bundles of each destination and partition, one per tenant (usually one in all).
    let mut index: HashMap<(&'static str, u64), Vec<usize>> = HashMap::new();
    let mut bundles: Vec<(RowToWrite, Bundle)> = Vec::new();
    for (trace_context, messages) in groups {
        for message in messages {
            let partition = partition_number(&message.partition_key);
            let slots = index.entry((message.destination, partition)).or_default();
            let same_tenant = slots
                .iter()
                .copied()
                .find(|&at| bundles[at].0.tenant_id == message.tenant_id);
            let at = same_tenant.unwrap_or_else(|| {
                let row = RowToWrite {
                    destination: message.destination,
                    message_id: uuid::Uuid::now_v7().to_string(),
                    tenant_id: message.tenant_id,
                    partition_key: partition_key(partition),
                    payload: Vec::new(),
                    trace_context: trace_context.clone(),
                    bundled: None,
                };
                bundles.push((row, Bundle::default()));
                slots.push(bundles.len() - 1);
                bundles.len() - 1
            });
            bundles[at].1.messages.push(Bundled {
                payload: message.payload,
                trace_context: trace_context.clone(),
            });
        }
    }
    bundles
        .into_iter()
        .map(|(mut row, bundle)| {
            row.bundled = Some(i32::try_from(bundle.messages.len()).unwrap_or(i32::MAX));
            row.payload = bundle.encode_to_vec();
            row
        })
        .collect()
}

/// Calls `each` with every message `row` carries, in order, and the trace context it was
/// produced under: its bundle's messages, or the row's own payload for a row holding one.
pub(super) fn for_each_message(
    row: &OutboxMessage,
    mut each: impl FnMut(&[u8], HashMap<String, String>) -> Result<(), DeliveryError>,
) -> Result<(), DeliveryError> {
    if row.bundled.is_none() {
        return each(&row.payload, row.trace_context.clone());
    }
    let bundle = Bundle::decode(row.payload.as_slice())
        .map_err(|err| DeliveryError(format!("outbox bundle does not decode: {err}")))?;
    for message in bundle.messages {
        let trace = serde_json::from_str(&message.trace_context).unwrap_or_default();
        each(&message.payload, trace)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(destination: &'static str, tenant: &str, key: &str, payload: &[u8]) -> NewMessage {
        NewMessage {
            destination,
            message_id: String::new(),
            tenant_id: tenant.into(),
            partition_key: key.into(),
            payload: payload.to_vec(),
        }
    }

    /// A message a row carries: its payload and trace context.
    type Carried = (Vec<u8>, HashMap<String, String>);

    fn unbundle(row: &OutboxMessage) -> Result<Vec<Carried>, DeliveryError> {
        let mut messages = Vec::new();
        for_each_message(row, |payload, trace| {
            messages.push((payload.to_vec(), trace));
            Ok(())
        })?;
        Ok(messages)
    }

    fn as_row(row: &RowToWrite) -> OutboxMessage {
        OutboxMessage {
            id: 1,
            message_id: "m".into(),
            tenant_id: row.tenant_id.clone(),
            partition_key: row.partition_key.clone(),
            payload: row.payload.clone(),
            trace_context: HashMap::new(),
            created_at: chrono::Utc::now(),
            attempts: 0,
            bundled: row.bundled,
        }
    }

    #[test]
    fn a_key_always_lands_in_the_same_partition_and_keys_spread_over_all_of_them() {
        assert_eq!(partition_of("lead-1"), partition_of("lead-1"));
        // FNV-1a (64-bit) is fixed by its definition: this value, computed by hand, must never
        // change, or replicas of two versions would split a lead's messages over two partitions.
        assert_eq!(partition_of("lead-1"), "partition-21");
        let used: std::collections::HashSet<String> = (0..10_000)
            .map(|i| partition_of(&format!("lead-{i}")))
            .collect();
        assert_eq!(used.len() as u64, PARTITIONS);
    }

    #[test]
    fn messages_are_bundled_by_destination_tenant_and_partition_in_order_with_their_traces() {
        let same = partition_of("a");
        let other = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| partition_of(k) != same)
            .expect("a key in another partition");
        let twin = (0..)
            .map(|i| format!("t{i}"))
            .find(|k| partition_of(k) == same)
            .expect("another key in the same partition");
        let rows = bundle(vec![
            (
                "{\"traceparent\":\"1\"}".into(),
                vec![
                    message("scoring", "t1", "a", b"1"),
                    message("scoring", "t1", &other, b"2"),
                ],
            ),
            (
                "{\"traceparent\":\"2\"}".into(),
                vec![
                    message("scoring", "t1", &twin, b"3"),
                    message("scoring", "t2", "a", b"4"),
                    message("handoff", "t1", "a", b"5"),
                ],
            ),
        ]);
        let shape: Vec<_> = rows
            .iter()
            .map(|r| (r.destination, r.tenant_id.as_str(), r.bundled.unwrap_or(0)))
            .collect();
        assert_eq!(
            shape,
            [
                ("scoring", "t1", 2),
                ("scoring", "t1", 1),
                ("scoring", "t2", 1),
                ("handoff", "t1", 1)
            ]
        );
        assert_eq!(rows[0].partition_key, same);
        let first = unbundle(&as_row(&rows[0])).expect("the bundle decodes");
        let payloads: Vec<&[u8]> = first.iter().map(|(p, _)| p.as_slice()).collect();
        assert_eq!(payloads, [b"1".as_slice(), b"3"]);
        let traces: Vec<&str> = first
            .iter()
            .map(|(_, t)| t["traceparent"].as_str())
            .collect();
        assert_eq!(traces, ["1", "2"]);
        assert_eq!(rows[0].trace_context, "{\"traceparent\":\"1\"}");
    }

    #[test]
    fn a_corrupt_bundle_is_a_delivery_error_and_a_plain_row_is_its_own_message() {
        let mut row = as_row(&bundle(vec![(String::new(), vec![message("s", "t", "a", b"x")])])[0]);
        row.payload = vec![0xff, 0xff, 0xff];
        assert!(unbundle(&row).is_err());
        row.bundled = None;
        let plain = unbundle(&row).expect("a plain row is its payload");
        assert_eq!(plain[0].0, vec![0xff, 0xff, 0xff]);
    }
}
