//! Conntrack-lite: 5-tuple flows. The first packet of a flow is NEW; once a flow is confirmed
//! (its first packet got through), packets of its reply direction are ESTABLISHED, and after a
//! reply so are later packets of the original direction. ICMP flows are keyed like Linux's
//! `nf_conntrack_proto_icmp`: by type, code and identifier, with a query's reply tuple
//! carrying the reply type (echo 8/0, timestamp 13/14, ICMPv6 echo 128/129) and the same
//! identifier. So an echo reply matches its request, while a later ping the other way (a new
//! `ping` run, a new identifier, a request type) is a NEW flow of its own. Masquerade is
//! recorded in the reply tuple.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_core::iptables::CtState;

use crate::sim::packet::{icmp_counterpart, Packet, L4};

/// A 5-tuple in one direction: addresses, protocol and the transport fields conntrack keys
/// on (ports; ICMP type, code and identifier; nothing for other protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub l4: L4,
}

impl FlowKey {
    pub fn of(packet: &Packet) -> Self {
        FlowKey {
            src: packet.src,
            dst: packet.dst,
            protocol: packet.protocol.number(),
            l4: packet.l4,
        }
    }

    /// The tuple of the answer: addresses and ports swapped; for ICMP, the matching reply type
    /// with the same code and identifier.
    pub fn reversed(self) -> Self {
        let l4 = match self.l4 {
            L4::Ports { src, dst } => L4::Ports { src: dst, dst: src },
            L4::Icmp {
                icmp_type,
                code,
                id,
            } => L4::Icmp {
                icmp_type: icmp_counterpart(icmp_type),
                code,
                id,
            },
            L4::Opaque => L4::Opaque,
        };
        FlowKey {
            src: self.dst,
            dst: self.src,
            protocol: self.protocol,
            l4,
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Classifies and confirms, like a packet that got through.
    fn pass(ct: &mut Conntrack, packet: &Packet) -> CtState {
        let c = ct.classify(packet);
        let key = FlowKey::of(packet);
        ct.confirm(c, key, key.reversed());
        c.state
    }

    #[test]
    fn echo_flows_are_keyed_by_identifier() {
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let mut ct = Conntrack::default();
        let ping = Packet::ping(a, b, 7);
        assert_eq!(pass(&mut ct, &ping), CtState::New);
        assert_eq!(pass(&mut ct, &ping.reply()), CtState::Established);
        assert_eq!(pass(&mut ct, &ping), CtState::Established);
        // The same echo id the other way is a request, not a reply: NEW.
        assert_eq!(ct.classify(&Packet::ping(b, a, 7)).state, CtState::New);
        // A new ping run from A (a new id) is a new flow; its reply belongs to no flow.
        assert_eq!(ct.classify(&Packet::ping(a, b, 8)).state, CtState::New);
        assert_eq!(ct.classify(&Packet::ping(a, b, 8).reply()).flow, None);
        // Timestamp request/reply pair up like echo.
        let ts = Packet::icmp(a, b, 13, 0);
        assert_eq!(pass(&mut ct, &ts), CtState::New);
        assert_eq!(ts.reply().l4, Packet::icmp(b, a, 14, 0).l4);
        assert_eq!(ct.classify(&ts.reply()).state, CtState::Established);
        assert_eq!(ct.len(), 2);
    }

    #[test]
    fn port_flows_are_keyed_by_both_ports() {
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let mut ct = Conntrack::default();
        let syn = Packet::tcp(a, b, 40000, 80);
        assert_eq!(pass(&mut ct, &syn), CtState::New);
        assert_eq!(ct.classify(&syn.reply()).state, CtState::Established);
        assert_eq!(
            ct.classify(&Packet::tcp(a, b, 40001, 80)).state,
            CtState::New
        );
        assert_eq!(
            ct.classify(&Packet::tcp(b, a, 80, 40001)).flow,
            None,
            "a reply-shaped packet of no flow is not tracked"
        );
        ct.flush();
        assert!(ct.is_empty());
        assert_eq!(ct.classify(&syn.reply()).state, CtState::New);
    }
}
