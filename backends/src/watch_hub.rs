//! The in-process fan-out of committed events to live watchers, shared by `MemStore` and
//! `SledStore`.
//!
//! A store calls [`WatchHub::subscribe`] and [`WatchHub::publish`] while it holds the lock
//! that orders its commits, so a new watcher's replay, its `InSync` and its first live event
//! meet without a gap or a duplicate. Channels are unbounded: a slow watcher costs memory but
//! never loses an event.

use futures::StreamExt;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::{Revision, StoreError, WatchEvent, WatchStream};

/// The key a write event is about (`None` for `InSync`).
pub(crate) fn event_key(event: &WatchEvent) -> Option<&str> {
    match event {
        WatchEvent::Put(kv) => Some(&kv.key),
        WatchEvent::Delete { key, .. } => Some(key),
        WatchEvent::InSync { .. } => None,
    }
}

/// One live watcher: its prefix, the first revision it wants, and its channel.
#[derive(Debug)]
struct Watcher {
    prefix: String,
    from_revision: Revision,
    tx: UnboundedSender<Result<WatchEvent, StoreError>>,
}

impl Watcher {
    fn wants(&self, event: &WatchEvent) -> bool {
        event_key(event).is_some_and(|key| key.starts_with(&self.prefix))
            && event.revision() >= self.from_revision
    }
}

/// The live watchers of one store.
#[derive(Debug, Default)]
pub(crate) struct WatchHub {
    watchers: Vec<Watcher>,
}

impl WatchHub {
    /// Starts a watch: queues `replay` (already filtered by the caller to the prefix and
    /// `>= from_revision`), then `InSync { revision: in_sync }`, then registers the watcher
    /// for live events. The caller must hold its commit lock across the history snapshot
    /// and this call.
    pub(crate) fn subscribe(
        &mut self,
        prefix: &str,
        from_revision: Revision,
        replay: impl IntoIterator<Item = WatchEvent>,
        in_sync: Revision,
    ) -> WatchStream {
        let (tx, rx) = unbounded_channel();
        for event in replay {
            // The receiver is alive: we hold it right here.
            let _ = tx.send(Ok(event));
        }
        let _ = tx.send(Ok(WatchEvent::InSync { revision: in_sync }));
        self.watchers.push(Watcher {
            prefix: prefix.to_owned(),
            from_revision,
            tx,
        });
        UnboundedReceiverStream::new(rx).boxed()
    }

    /// Delivers the events of one commit, in order, to every watcher that wants them and
    /// forgets watchers whose stream was dropped.
    pub(crate) fn publish(&mut self, events: &[WatchEvent]) {
        self.watchers.retain(|watcher| {
            for event in events.iter().filter(|e| watcher.wants(e)) {
                if watcher.tx.send(Ok(event.clone())).is_err() {
                    return false;
                }
            }
            !watcher.tx.is_closed()
        });
    }

    /// Number of registered watchers (dropped streams are forgotten on the next publish).
    pub(crate) fn len(&self) -> usize {
        self.watchers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyValue;

    fn put(key: &str, rev: Revision) -> WatchEvent {
        WatchEvent::Put(KeyValue {
            key: key.to_owned(),
            value: b"v".to_vec(),
            create_revision: rev,
            mod_revision: rev,
        })
    }

    #[tokio::test]
    async fn replay_then_in_sync_then_live_filtered_by_prefix_and_revision() {
        let mut hub = WatchHub::default();
        let mut stream = hub.subscribe("/a/", 3, vec![put("/a/x", 3)], 4);
        hub.publish(&[put("/b/x", 5), put("/a/y", 5)]);
        let got: Vec<WatchEvent> = stream.by_ref().take(3).map(|e| e.unwrap()).collect().await;
        assert_eq!(
            got,
            vec![
                put("/a/x", 3),
                WatchEvent::InSync { revision: 4 },
                put("/a/y", 5)
            ]
        );
    }

    #[tokio::test]
    async fn dropped_watchers_are_forgotten() {
        let mut hub = WatchHub::default();
        let stream = hub.subscribe("/", 1, Vec::new(), 0);
        assert_eq!(hub.len(), 1);
        drop(stream);
        hub.publish(&[put("/x", 1)]);
        assert_eq!(hub.len(), 0);
    }
}
