//! The watch stream's framing, both ends of it: the server splits the events of a revision
//! into responses ([`responses`]); the client puts them back together ([`Assembler`]) and
//! delivers a revision only whole, so that a stream that breaks anywhere resumes after the
//! last revision delivered and loses nothing (see `WatchResponse` in `proto/api.proto`).

use orch_core::{Revision, WatchEvent};
use prost::Message;

use crate::Error;
use crate::convert::{event_type_from_pb, event_type_to_pb, object_from_pb, object_to_pb};
use crate::pb;

/// How many bytes of events a server puts in one watch response before it starts the next
/// fragment of the revision, by default. One event larger than this travels alone.
pub const WATCH_MESSAGE_BYTES_DEFAULT: usize = 1024 * 1024;

/// The most bytes of events of one revision a client puts together: the largest response it
/// accepts. A revision over it is a broken server.
pub const WATCH_REVISION_BYTES_MAX: usize = crate::RESPONSE_BYTES_MAX;

/// One item of a watch stream.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchItem {
    /// The committed changes of one revision that match the filter, in order, all of them.
    Events {
        /// The revision (log index) they share.
        revision: u64,
        /// The changes, at least one.
        events: Vec<WatchEvent>,
    },
    /// Every matching change up to this revision has been delivered.
    Progress(u64),
}

impl WatchItem {
    /// The revision the stream has reached with this item.
    pub fn revision(&self) -> u64 {
        match self {
            WatchItem::Events { revision, .. } | WatchItem::Progress(revision) => *revision,
        }
    }
}

/// A progress response: every matching event up to `revision` was sent.
pub fn progress(revision: u64) -> pb::WatchResponse {
    pb::WatchResponse { revision, events: Vec::new(), fragment: false }
}

/// The responses that carry the events of one revision: as few as fit `message_bytes` each
/// (at least one event per response), all but the last marked as fragments.
pub fn responses(revision: u64, events: &[WatchEvent], message_bytes: usize) -> Vec<pb::WatchResponse> {
    Fragments::new(revision, events.to_vec(), message_bytes).collect()
}

/// The responses of one revision, made one at a time as they are sent, so that a server
/// holds the wire form of at most one response per watch whatever the revision's size.
pub struct Fragments {
    revision: u64,
    events: std::vec::IntoIter<WatchEvent>,
    /// An event made for the last response that did not fit it.
    carried: Option<pb::WatchEvent>,
    message_bytes: usize,
    done: bool,
}

impl Fragments {
    /// The responses for `events` (at least one) of `revision`.
    pub fn new(revision: u64, events: Vec<WatchEvent>, message_bytes: usize) -> Self {
        Self { revision, events: events.into_iter(), carried: None, message_bytes, done: false }
    }
}

impl Iterator for Fragments {
    type Item = pb::WatchResponse;

    fn next(&mut self) -> Option<pb::WatchResponse> {
        if self.done {
            return None;
        }
        let mut current: Vec<pb::WatchEvent> = self.carried.take().into_iter().collect();
        let mut bytes: usize = current.iter().map(Message::encoded_len).sum();
        for e in self.events.by_ref() {
            let event =
                pb::WatchEvent { r#type: event_type_to_pb(e.event_type).into(), object: Some(object_to_pb(&e.object)) };
            let len = event.encoded_len();
            if !current.is_empty() && bytes + len > self.message_bytes {
                self.carried = Some(event);
                return Some(pb::WatchResponse { revision: self.revision, events: current, fragment: true });
            }
            bytes += len;
            current.push(event);
        }
        self.done = true;
        Some(pb::WatchResponse { revision: self.revision, events: current, fragment: false })
    }
}

/// A revision whose fragments are still arriving.
struct Partial {
    revision: u64,
    events: Vec<WatchEvent>,
    bytes: usize,
}

/// The client's end: takes the responses of a stream, and of the streams that resume it,
/// and yields whole revisions and progress, tracking where to resume.
pub struct Assembler {
    /// Everything up to this revision was delivered (meaningful once `positioned`).
    revision: u64,
    /// Whether the stream knows its revision: asked for one, or was told it.
    positioned: bool,
    partial: Option<Partial>,
}

fn broken(what: impl std::fmt::Display) -> Error {
    Error::Internal(format!("malformed watch response from the server: {what}"))
}

impl Assembler {
    /// For a watch of the events after `from_revision` (0: from now).
    pub fn new(from_revision: u64) -> Self {
        Self { revision: from_revision, positioned: from_revision > 0, partial: None }
    }

    /// The revision to ask for when the stream is opened again: the last one delivered (or
    /// reported by progress); 0 while a watch from now has not been told its revision.
    pub fn resume_from(&self) -> u64 {
        self.revision
    }

    /// The stream broke: a revision in fragments is dropped, to come again whole after the
    /// resume.
    pub fn broken(&mut self) {
        self.partial = None;
    }

    /// Takes the next response; returns an item when a revision is complete or progress came.
    ///
    /// # Errors
    /// [`Error::Internal`] when the server breaks the framing: revisions that go back, a
    /// revision left incomplete, more than [`WATCH_REVISION_BYTES_MAX`], undecodable events.
    pub fn push(&mut self, response: pb::WatchResponse) -> Result<Option<WatchItem>, Error> {
        let revision = response.revision;
        if response.events.is_empty() && !response.fragment {
            if self.partial.is_some() {
                return Err(broken(format!("progress at {revision} inside a revision in fragments")));
            }
            if self.positioned && revision < self.revision {
                return Err(broken(format!("progress went back from {} to {revision}", self.revision)));
            }
            self.revision = revision;
            self.positioned = true;
            return Ok(Some(WatchItem::Progress(revision)));
        }
        if self.positioned && revision <= self.revision {
            return Err(broken(format!("events of revision {revision} after revision {}", self.revision)));
        }
        let partial = self.partial.get_or_insert_with(|| Partial { revision, events: Vec::new(), bytes: 0 });
        if partial.revision != revision {
            return Err(broken(format!("revision {} was left incomplete for {revision}", partial.revision)));
        }
        partial.bytes = partial.bytes.saturating_add(response.encoded_len());
        if partial.bytes > WATCH_REVISION_BYTES_MAX {
            return Err(broken(format!("revision {revision} holds more than {WATCH_REVISION_BYTES_MAX} bytes")));
        }
        for (i, e) in response.events.iter().enumerate() {
            let event_type = pb::EventType::try_from(e.r#type).map_err(|_| broken(format!("events[{i}].type")))?;
            let object = object_from_pb(e.object.as_ref(), &format!("events[{i}].object")).map_err(broken)?;
            partial.events.push(WatchEvent {
                revision: Revision(revision),
                event_type: event_type_from_pb(event_type),
                object,
                prev: None,
            });
        }
        if response.fragment {
            return Ok(None);
        }
        let Some(done) = self.partial.take() else { return Ok(None) };
        self.revision = revision;
        self.positioned = true;
        Ok(Some(WatchItem::Events { revision, events: done.events }))
    }
}

#[cfg(test)]
mod tests {
    use orch_core::{EventType, Object};

    use super::*;

    fn event(i: usize) -> WatchEvent {
        let mut ns = orch_core::core_v1::Namespace::default();
        ns.metadata.name = format!("ns-{i:04}").into();
        WatchEvent { revision: Revision(7), event_type: EventType::Added, object: Object::from(ns), prev: None }
    }

    fn names(item: &WatchItem) -> Vec<String> {
        match item {
            WatchItem::Events { events, .. } => events.iter().map(|e| e.object.meta().name.to_string()).collect(),
            WatchItem::Progress(_) => Vec::new(),
        }
    }

    #[test]
    fn a_large_revision_is_split_and_put_back_together() {
        let events: Vec<_> = (0..100).map(event).collect();
        let parts = responses(7, &events, 500);
        assert!(parts.len() > 5, "{} responses", parts.len());
        assert!(parts[..parts.len() - 1].iter().all(|r| r.fragment) && !parts[parts.len() - 1].fragment);
        assert!(parts.iter().all(|r| r.events.len() == 1 || r.encoded_len() <= 600));
        let mut a = Assembler::new(5);
        let mut items = Vec::new();
        for p in parts {
            items.extend(a.push(p).expect("well formed"));
        }
        assert_eq!(items.len(), 1, "delivered once, whole");
        assert_eq!(names(&items[0]), events.iter().map(|e| e.object.meta().name.to_string()).collect::<Vec<_>>());
        assert_eq!(a.resume_from(), 7);
    }

    #[test]
    fn a_break_inside_a_revision_resumes_before_it() {
        let events: Vec<_> = (0..10).map(event).collect();
        let parts = responses(7, &events, 200);
        let mut a = Assembler::new(5);
        assert_eq!(a.push(parts[0].clone()).expect("ok"), None);
        a.broken();
        assert_eq!(a.resume_from(), 5, "nothing of revision 7 counts until all of it came");
        // The resumed stream sends revision 7 again, whole.
        let mut items = Vec::new();
        for p in parts {
            items.extend(a.push(p).expect("well formed"));
        }
        assert_eq!(names(&items[0]).len(), 10);
    }

    #[test]
    fn progress_positions_a_watch_from_now() {
        let mut a = Assembler::new(0);
        assert_eq!(a.resume_from(), 0);
        assert_eq!(a.push(progress(42)).expect("ok"), Some(WatchItem::Progress(42)));
        assert_eq!(a.resume_from(), 42);
    }

    #[test]
    fn a_server_that_breaks_the_framing_is_refused() {
        let mut a = Assembler::new(5);
        assert!(a.push(progress(4)).is_err(), "progress went back");
        let mut a = Assembler::new(5);
        assert!(a.push(responses(5, &[event(1)], 100).remove(0)).is_err(), "events at the revision resumed after");
        let mut a = Assembler::new(5);
        let mut first = responses(6, &[event(1), event(2)], 10);
        assert!(a.push(first.remove(0)).expect("fragment").is_none());
        assert!(a.push(progress(6)).is_err(), "progress inside a revision in fragments");
        let mut a = Assembler::new(5);
        let mut f6 = responses(6, &[event(1), event(2)], 10);
        assert!(a.push(f6.remove(0)).expect("fragment").is_none());
        assert!(a.push(responses(8, &[event(3)], 10).remove(0)).is_err(), "revision 6 left incomplete");
    }

    #[test]
    fn one_revision_fits_one_response_by_default() {
        let events: Vec<_> = (0..100).map(event).collect();
        assert_eq!(responses(7, &events, WATCH_MESSAGE_BYTES_DEFAULT).len(), 1);
    }
}
