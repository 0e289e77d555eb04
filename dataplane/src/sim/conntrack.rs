//! Conntrack-lite: 5-tuple flows. The first packet of a flow is NEW; once a flow is confirmed
//! (its first packet got through), packets of its reply direction are ESTABLISHED, and after a
//! reply so are later packets of the original direction. ICMP flows are keyed by type (in the
//! destination-port slot), so an echo reply matches its request but a request the other way
//! does not. Masquerade is recorded in the reply tuple.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_core::iptables::CtState;

use crate::sim::packet::{Packet, L4};

/// A 5-tuple in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

impl FlowKey {
    pub fn of(packet: &Packet) -> Self {
        let (src_port, dst_port) = match packet.l4 {
            L4::Ports { src, dst } => (src, dst),
            L4::Icmp { icmp_type, .. } => (0, u16::from(icmp_type)),
            L4::Opaque => (0, 0),
        };
        FlowKey {
            src: packet.src,
            dst: packet.dst,
            protocol: packet.protocol.number(),
            src_port,
            dst_port,
        }
    }

    /// The tuple of the answer (for ICMP queries, the matching reply type).
    pub fn reversed(self) -> Self {
        let (src_port, dst_port) = if matches!(self.protocol, 1 | 58) {
            let reply = match self.dst_port {
                8 => 0,
                0 => 8,
                13 => 14,
                14 => 13,
                128 => 129,
                129 => 128,
                other => other,
            };
            (0, reply)
        } else {
            (self.dst_port, self.src_port)
        };
        FlowKey {
            src: self.dst,
            dst: self.src,
            protocol: self.protocol,
            src_port,
            dst_port,
        }
    }
}

/// One tracked flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub original: FlowKey,
    /// What the answer looks like on arrival (after masquerade, addressed to the new source).
    pub reply: FlowKey,
    pub seen_reply: bool,
}

/// Which way a packet travels in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Original,
    Reply,
}

/// What conntrack says about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub state: CtState,
    /// The tracked flow and the packet's direction in it; `None` for a new flow.
    pub flow: Option<(usize, Direction)>,
}

/// The connection table of one namespace.
#[derive(Debug, Clone, Default)]
pub struct Conntrack {
    flows: BTreeMap<usize, Flow>,
    index: BTreeMap<FlowKey, (usize, Direction)>,
    next: usize,
}

impl Conntrack {
    /// Classifies a packet as it arrives.
    pub fn classify(&self, packet: &Packet) -> Classified {
        match self.index.get(&FlowKey::of(packet)) {
            Some(&(id, dir)) => {
                let seen_reply = self.flows.get(&id).is_some_and(|f| f.seen_reply);
                let state = match dir {
                    Direction::Reply => CtState::Established,
                    Direction::Original if seen_reply => CtState::Established,
                    Direction::Original => CtState::New,
                };
                Classified {
                    state,
                    flow: Some((id, dir)),
                }
            }
            None => Classified {
                state: CtState::New,
                flow: None,
            },
        }
    }

    pub fn flow(&self, id: usize) -> Option<&Flow> {
        self.flows.get(&id)
    }

    /// Records that a packet got through: a new flow is created (with `reply` as its answer
    /// tuple), a reply marks its flow as answered.
    pub fn confirm(&mut self, classified: Classified, original: FlowKey, reply: FlowKey) {
        match classified.flow {
            Some((id, Direction::Reply)) => {
                if let Some(flow) = self.flows.get_mut(&id) {
                    flow.seen_reply = true;
                }
            }
            Some((_, Direction::Original)) => {}
            None => {
                let id = self.next;
                self.next += 1;
                self.flows.insert(
                    id,
                    Flow {
                        original,
                        reply,
                        seen_reply: false,
                    },
                );
                self.index.insert(original, (id, Direction::Original));
                self.index.insert(reply, (id, Direction::Reply));
            }
        }
    }

    /// Like `conntrack -F`.
    pub fn flush(&mut self) {
        self.flows.clear();
        self.index.clear();
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}
