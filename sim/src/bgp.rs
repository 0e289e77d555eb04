//! Simulated BGP between the hosts of a world, decided by each host's BIRD configuration.
//!
//! A session between hosts A and B (per family) is Established when A lists B's address as a
//! peer with B's local AS, B lists A's address with A's AS, both agents (and so both BIRDs)
//! run, and the session has not been cut. A host originates the routes its kernel holds (its
//! `routes_for_export()`: BIRD's kernel protocol with `learn`) and one static blackhole route
//! per IPAM block affine to it (`BirdConfig::blocks`). What it advertises to every established
//! peer is filtered as its `calico_pools` filter does: a block route is accepted, anything more
//! specific inside one of its blocks is rejected (block aggregation, reference 4.4), and the
//! rest only inside an export pool. The peer installs `dst via <advertiser>` (proto bird),
//! except inside its overlay pools (its kernel filter rejects those: the agent tunnels them); the
//! host's own BIRD writes its blocks into its kernel as `blackhole <block> proto bird`
//! ([`blackholes`]), so unused addresses of a block are dropped there instead of being sent
//! back out. Only locally originated routes are advertised: iBGP does not pass routes
//! learned from one peer on to another (a full mesh does not need it; eBGP transit is not
//! modelled). A stopped host's BIRD is gone, so its peers withdraw what they learned from it,
//! while its own kernel keeps what BIRD had written (`persist`).
//!
//! This module is pure: the world hands it each host's view ([`Speaker`]) and applies the
//! learned routes it computes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use calico_core::desired::{BirdConfig, BirdPeer, PeerKind};
use ipnet::IpNet;

/// What the BGP model needs to know about one host.
#[derive(Debug, Clone)]
pub struct Speaker<'a> {
    pub host: &'a str,
    /// Whether the host's agent (and so BIRD) runs.
    pub running: bool,
    /// BIRD configs as applied to the host (v4, v6).
    pub bird: [Option<&'a BirdConfig>; 2],
    /// Routes the kernel holds that BIRD may originate (not those BIRD itself learned).
    pub exports: &'a [IpNet],
}

/// Meshes with at least this many speakers work out their routes on several threads.
const PARALLEL_SPEAKERS: usize = 64;

/// A route one host should hold because a peer advertised it.
pub type LearnedRoutes = BTreeMap<IpNet, IpAddr>;

/// Why a configured session is not up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    Established,
    /// Not up; `reason` is what BIRD's info column would hint at.
    Down {
        reason: String,
    },
}

/// One row of `calicoctl status` / `birdc show protocols` for a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// BIRD protocol name: `Mesh_172_31_250_2`, `Global_...`, `Node_...`.
    pub protocol: String,
    pub peer_ip: IpAddr,
    pub kind: PeerKind,
    pub state: SessionState,
    /// Routes imported over this session.
    pub routes_imported: usize,
}

impl PeerStatus {
    /// The peer type column of `calicoctl status`.
    pub fn peer_type(&self) -> &'static str {
        match self.kind {
            PeerKind::Mesh => "node-to-node mesh",
            PeerKind::Global => "global",
            PeerKind::Node => "node specific",
        }
    }

    /// BIRD's protocol state: `up` or `start`.
    pub fn bird_state(&self) -> &'static str {
        match self.state {
            SessionState::Established => "up",
            SessionState::Down { .. } => "start",
        }
    }

    /// BIRD's info column: `Established`, or `Active` with the reason.
    pub fn info(&self) -> String {
        match &self.state {
            SessionState::Established => "Established".to_string(),
            SessionState::Down { reason } => format!("Active ({reason})"),
        }
    }
}

impl fmt::Display for PeerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {}",
            self.protocol,
            self.peer_ip,
            self.peer_type(),
            self.bird_state(),
            self.info()
        )
    }
}

/// The BIRD protocol name of a peer: kind prefix and the address with `.`/`:` as `_`.
pub fn protocol_name(kind: PeerKind, ip: IpAddr) -> String {
    let prefix = match kind {
        PeerKind::Mesh => "Mesh",
        PeerKind::Global => "Global",
        PeerKind::Node => "Node",
    };
    format!("{prefix}_{}", ip.to_string().replace(['.', ':'], "_"))
}

/// The sessions the test harness has cut, like pulling a cable between two BIRDs.
#[derive(Debug, Clone, Default)]
pub struct BgpFabric {
    cuts: BTreeSet<(String, String)>,
    /// The last answer of [`BgpFabric::learned_memo`] and what it was worked out from.
    memo: Option<Arc<LearnedMemo>>,
}

/// Every host's learned routes and the speakers they were learned from.
struct LearnedMemo {
    speakers: Vec<SpeakerInputs>,
    learned: Arc<BTreeMap<String, LearnedRoutes>>,
}

impl fmt::Debug for LearnedMemo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LearnedMemo")
            .field("speakers", &self.speakers.len())
            .finish_non_exhaustive()
    }
}

/// An owned copy of a [`Speaker`].
#[derive(Debug, PartialEq)]
struct SpeakerInputs {
    host: String,
    running: bool,
    bird: [Option<BirdConfig>; 2],
    exports: Vec<IpNet>,
}

impl SpeakerInputs {
    fn of(speaker: &Speaker<'_>) -> Self {
        SpeakerInputs {
            host: speaker.host.to_string(),
            running: speaker.running,
            bird: speaker.bird.map(|c| c.cloned()),
            exports: speaker.exports.to_vec(),
        }
    }

    fn describes(&self, speaker: &Speaker<'_>) -> bool {
        self.host == speaker.host
            && self.running == speaker.running
            && self.bird[0].as_ref() == speaker.bird[0]
            && self.bird[1].as_ref() == speaker.bird[1]
            && self.exports == speaker.exports
    }
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

impl BgpFabric {
    /// Takes the session between `a` and `b` down (both families) until healed.
    pub fn cut_session(&mut self, a: &str, b: &str) {
        self.cuts.insert(pair(a, b));
        self.memo = None;
    }

    /// Lets the session between `a` and `b` come back.
    pub fn heal_session(&mut self, a: &str, b: &str) {
        self.cuts.remove(&pair(a, b));
        self.memo = None;
    }

    /// [`BgpFabric::learned`], reusing the last answer when the speakers are the same as
    /// then (and no session was cut or healed since): a world exchanges routes after every
    /// round of agent steps, and most rounds change no BIRD config and no exported route,
    /// while working the routes out is quadratic in a full mesh (comparing the speakers is
    /// linear in the sessions).
    pub fn learned_memo(
        &mut self,
        speakers: &[Speaker<'_>],
    ) -> Arc<BTreeMap<String, LearnedRoutes>> {
        if let Some(memo) = &self.memo {
            let same = memo.speakers.len() == speakers.len()
                && memo
                    .speakers
                    .iter()
                    .zip(speakers)
                    .all(|(m, s)| m.describes(s));
            if same {
                return Arc::clone(&memo.learned);
            }
        }
        let learned = Arc::new(self.learned(speakers));
        self.memo = Some(Arc::new(LearnedMemo {
            speakers: speakers.iter().map(SpeakerInputs::of).collect(),
            learned: Arc::clone(&learned),
        }));
        learned
    }

    pub fn is_cut(&self, a: &str, b: &str) -> bool {
        // Asked once per session per exchange: no pair is built while nothing is cut.
        !self.cuts.is_empty() && self.cuts.contains(&pair(a, b))
    }

    /// The state of every session `host` configures, in its BIRD config order (v4 then v6).
    pub fn peer_table(&self, speakers: &[Speaker<'_>], host: &str) -> Vec<PeerStatus> {
        let index = AddressIndex::new(speakers);
        let Some(me) = speakers.iter().find(|s| s.host == host) else {
            return Vec::new();
        };
        let learned = self.learned(speakers);
        let mine = learned.get(host);
        let mut rows = Vec::new();
        for (family, config) in me.bird.iter().enumerate() {
            let Some(config) = config else { continue };
            for peer in &config.peers {
                let state = self.session(&index, me, family, config, peer.ip, peer.as_num.0);
                let routes_imported = mine.map_or(0, |routes| {
                    routes.values().filter(|via| **via == peer.ip).count()
                });
                rows.push(PeerStatus {
                    protocol: protocol_name(peer.kind, peer.ip),
                    peer_ip: peer.ip,
                    kind: peer.kind,
                    routes_imported: if state == SessionState::Established {
                        routes_imported
                    } else {
                        0
                    },
                    state,
                });
            }
        }
        rows
    }

    /// Whether `me`'s session (family index 0 = v4, 1 = v6) to `peer_ip` is up, and why not.
    fn session(
        &self,
        index: &AddressIndex<'_, '_>,
        me: &Speaker<'_>,
        family: usize,
        mine: &BirdConfig,
        peer_ip: IpAddr,
        peer_as: u32,
    ) -> SessionState {
        let down = |reason: String| SessionState::Down { reason };
        if !me.running {
            return down("agent stopped".to_string());
        }
        let Some(other) = index.by_address[family].get(&peer_ip) else {
            return down(format!("no BGP speaker at {peer_ip}"));
        };
        if !other.running {
            return down(format!("agent on {} stopped", other.host));
        }
        let Some(theirs) = other.bird[family] else {
            return down(format!("{} runs no BIRD for this family", other.host));
        };
        if theirs.local_as.0 != peer_as {
            return down(format!(
                "{} speaks AS {}, not {peer_as}",
                other.host, theirs.local_as
            ));
        }
        let reciprocal = PEER_KINDS.into_iter().any(|kind| {
            theirs.peers.contains(&BirdPeer {
                kind,
                ip: mine.source_address,
                as_num: mine.local_as,
            })
        });
        if !reciprocal {
            return down(format!(
                "{} does not peer with {}",
                other.host, mine.source_address
            ));
        }
        if self.is_cut(me.host, other.host) {
            return down("session cut".to_string());
        }
        SessionState::Established
    }

    /// The routes every host should hold from BGP: host → destination → next hop.
    pub fn learned(&self, speakers: &[Speaker<'_>]) -> BTreeMap<String, LearnedRoutes> {
        let index = AddressIndex::new(speakers);
        // What each speaker advertises does not depend on who listens: filtered once per
        // speaker instead of once per session (a full mesh has N² of them).
        let adverts = [0, 1].map(|family: usize| {
            index.by_address[family]
                .iter()
                .filter_map(|(addr, s)| {
                    let config = s.bird[family]?;
                    Some((*addr, advertised(s, config).collect::<Vec<_>>()))
                })
                .collect::<BTreeMap<IpAddr, Vec<IpNet>>>()
        });
        let learn = |me: &Speaker<'_>| (me.host.to_string(), self.learned_by(&index, &adverts, me));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if speakers.len() < PARALLEL_SPEAKERS || threads < 2 {
            return speakers.iter().map(learn).collect();
        }
        // Each host's routes depend only on the shared, read-only index: large meshes (N²
        // sessions) are worked out on every core.
        let chunk = speakers.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = speakers
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().map(learn).collect::<Vec<_>>()))
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }

    /// The routes `me` learns from its established peers (none while it is stopped).
    fn learned_by(
        &self,
        index: &AddressIndex<'_, '_>,
        adverts: &[BTreeMap<IpAddr, Vec<IpNet>>; 2],
        me: &Speaker<'_>,
    ) -> LearnedRoutes {
        if !me.running {
            return LearnedRoutes::new();
        }
        // Gathered, then sorted once and the map built from the sorted run: a full mesh
        // learns a route from each of N - 1 peers, on each of N hosts.
        let mut routes: Vec<(IpNet, IpAddr)> = Vec::new();
        let mut local: BTreeSet<IpNet> = me.exports.iter().map(IpNet::trunc).collect();
        local.extend(blackholes(me));
        for (family, config) in me.bird.iter().enumerate() {
            let Some(config) = config else { continue };
            for peer in &config.peers {
                let state = self.session(index, me, family, config, peer.ip, peer.as_num.0);
                if state != SessionState::Established {
                    continue;
                }
                // Established: the peer runs a BIRD of this family at `peer.ip`.
                let Some(advertised) = adverts[family].get(&peer.ip) else {
                    continue;
                };
                for &dst in advertised {
                    if local.contains(&dst) {
                        continue;
                    }
                    // `calico_ipip` keeps BGP routes of overlay pools out of the kernel: the
                    // agent routes those through its tunnel.
                    if config.overlay_pools.iter().any(|p| p.contains(&dst)) {
                        continue;
                    }
                    routes.push((dst, peer.ip));
                }
            }
        }
        // Of several peers advertising one destination, the lowest address is the next hop:
        // sorted by destination then next hop, the first of each destination's run.
        routes.sort_unstable();
        routes.dedup_by_key(|(dst, _)| *dst);
        routes.into_iter().collect()
    }
}

/// The static routes `speaker`'s BIRD writes into its own kernel: one blackhole per IPAM block
/// affine to it (both families), while its agent (and so BIRD) runs.
pub fn blackholes(speaker: &Speaker<'_>) -> BTreeSet<IpNet> {
    if !speaker.running {
        return BTreeSet::new();
    }
    speaker
        .bird
        .iter()
        .flatten()
        .flat_map(|config| config.blocks.iter().copied())
        .collect()
}

/// What `speaker` advertises with `config` (its `calico_pools` filter): its block routes, and
/// its kernel's routes that lie inside an export pool but inside none of its blocks.
fn advertised<'s>(
    speaker: &'s Speaker<'_>,
    config: &'s BirdConfig,
) -> impl Iterator<Item = IpNet> + 's {
    let kernel = speaker.exports.iter().map(IpNet::trunc).filter(move |dst| {
        !config.blocks.iter().any(|block| block.contains(dst))
            && config.export_pools.iter().any(|pool| pool.contains(dst))
    });
    config.blocks.iter().copied().chain(kernel)
}

/// Every kind of peer: a session's reciprocity is one lookup per kind in the other side's
/// (ordered) peers, instead of a scan of them or an index of all N² peerings of a mesh.
const PEER_KINDS: [PeerKind; 3] = [PeerKind::Mesh, PeerKind::Global, PeerKind::Node];

/// Fails to compile when a kind of peer is added, until [`PEER_KINDS`] lists it.
const _: fn(PeerKind) = |kind| match kind {
    PeerKind::Mesh | PeerKind::Global | PeerKind::Node => {}
};

/// Speakers by the source address of their v4 and v6 BIRD.
struct AddressIndex<'s, 'a> {
    /// Hashed rather than ordered: looked up once per session, N² times in a full mesh, and
    /// never iterated in an order that matters.
    by_address: [HashMap<IpAddr, &'s Speaker<'a>>; 2],
}

impl<'s, 'a> AddressIndex<'s, 'a> {
    fn new(speakers: &'s [Speaker<'a>]) -> Self {
        let mut by_address = [HashMap::new(), HashMap::new()];
        for s in speakers {
            for (family, config) in s.bird.iter().enumerate() {
                if let Some(config) = config {
                    by_address[family].insert(config.source_address, s);
                }
            }
        }
        AddressIndex { by_address }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use calico_core::model::AsNumber;

    use super::*;

    fn config(me: u8, peers: &[u8], asn: u32) -> BirdConfig {
        let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(172, 31, 250, n));
        BirdConfig {
            router_id: Ipv4Addr::new(172, 31, 250, me),
            source_address: ip(me),
            local_as: AsNumber(asn),
            peers: peers
                .iter()
                .map(|p| BirdPeer {
                    kind: PeerKind::Mesh,
                    ip: ip(*p),
                    as_num: AsNumber(64511),
                })
                .collect(),
            export_pools: ["192.168.0.0/16".parse().unwrap()].into(),
            overlay_pools: BTreeSet::new(),
            blocks: BTreeSet::new(),
            loglevel: None,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn mesh_carries_pool_routes_only_while_established() {
        let (c1, c2) = (config(2, &[3], 64511), config(3, &[2], 64511));
        let exports1 = [net("192.168.1.1/32"), net("10.9.0.0/16")];
        let exports2 = [net("192.168.1.2/32")];
        let speakers = |running2: bool| {
            vec![
                Speaker {
                    host: "host1",
                    running: true,
                    bird: [Some(&c1), None],
                    exports: &exports1,
                },
                Speaker {
                    host: "host2",
                    running: running2,
                    bird: [Some(&c2), None],
                    exports: &exports2,
                },
            ]
        };
        let mut fabric = BgpFabric::default();
        let learned = fabric.learned(&speakers(true));
        let via1 = IpAddr::V4(Ipv4Addr::new(172, 31, 250, 2));
        let via2 = IpAddr::V4(Ipv4Addr::new(172, 31, 250, 3));
        assert_eq!(learned["host1"], [(net("192.168.1.2/32"), via2)].into());
        assert_eq!(learned["host2"], [(net("192.168.1.1/32"), via1)].into());
        let table = fabric.peer_table(&speakers(true), "host1");
        assert_eq!(table.len(), 1);
        assert_eq!(table[0].protocol, "Mesh_172_31_250_3");
        assert_eq!(table[0].info(), "Established");
        assert_eq!(table[0].routes_imported, 1);

        fabric.cut_session("host2", "host1");
        assert!(fabric.learned(&speakers(true))["host1"].is_empty());
        assert_eq!(
            fabric.peer_table(&speakers(true), "host1")[0].state,
            SessionState::Down {
                reason: "session cut".to_string()
            }
        );
        fabric.heal_session("host1", "host2");
        let stopped = fabric.learned(&speakers(false));
        assert!(stopped["host1"].is_empty());
        assert!(stopped["host2"].is_empty());
    }

    /// host1, running with `c1`, and host2 as given.
    fn pair<'a>(
        c1: &'a BirdConfig,
        exports1: &'a [IpNet],
        c2: &'a BirdConfig,
        running2: bool,
        exports2: &'a [IpNet],
    ) -> [Speaker<'a>; 2] {
        [
            Speaker {
                host: "host1",
                running: true,
                bird: [Some(c1), None],
                exports: exports1,
            },
            Speaker {
                host: "host2",
                running: running2,
                bird: [Some(c2), None],
                exports: exports2,
            },
        ]
    }

    #[test]
    fn the_memo_answers_like_learned_and_only_while_nothing_changed() {
        let (c1, c2) = (config(2, &[3], 64511), config(3, &[2], 64511));
        let (exports1, exports2) = ([net("192.168.1.1/32")], [net("192.168.1.2/32")]);
        let mut c2_other_as = c2.clone();
        c2_other_as.local_as = AsNumber(65000);
        let speakers = |c2: &BirdConfig, running2: bool, exports2: &[IpNet]| {
            BgpFabric::default().learned(&pair(&c1, &exports1, c2, running2, exports2))
        };
        let mut fabric = BgpFabric::default();
        let ask = |fabric: &mut BgpFabric, c2: &BirdConfig, running2: bool, exports2: &[IpNet]| {
            fabric.learned_memo(&pair(&c1, &exports1, c2, running2, exports2))
        };
        let first = ask(&mut fabric, &c2, true, &exports2);
        assert_eq!(*first, speakers(&c2, true, &exports2));
        assert!(!first["host1"].is_empty());
        assert!(Arc::ptr_eq(
            &first,
            &ask(&mut fabric, &c2.clone(), true, &exports2)
        ));
        // Any change of a speaker (config, running, exports) or of the cuts is worked out anew.
        let changes: [(&BirdConfig, bool, &[IpNet]); 3] = [
            (&c2_other_as, true, &exports2),
            (&c2, false, &exports2),
            (&c2, true, &[]),
        ];
        for (config, running, exports) in changes {
            let again = ask(&mut fabric, &c2, true, &exports2);
            let changed = ask(&mut fabric, config, running, exports);
            assert!(!Arc::ptr_eq(&again, &changed));
            assert_eq!(*changed, speakers(config, running, exports));
            assert_ne!(*changed, *first);
        }
        ask(&mut fabric, &c2, true, &exports2);
        fabric.cut_session("host1", "host2");
        assert!(ask(&mut fabric, &c2, true, &exports2)["host1"].is_empty());
        fabric.heal_session("host1", "host2");
        assert_eq!(ask(&mut fabric, &c2, true, &exports2), first);
    }

    #[test]
    fn blocks_are_announced_once_and_borrowed_addresses_one_by_one() {
        // host1 owns 192.168.1.0/26 (two workloads in it); host2 borrowed .2 from that block
        // and owns 192.168.1.64/26 with no workload yet.
        let mut c1 = config(2, &[3], 64511);
        c1.blocks = [net("192.168.1.0/26")].into();
        let mut c2 = config(3, &[2], 64511);
        c2.blocks = [net("192.168.1.64/26")].into();
        let exports1 = [net("192.168.1.1/32"), net("192.168.1.3/32")];
        let exports2 = [net("192.168.1.2/32")];
        let speakers = [
            Speaker {
                host: "host1",
                running: true,
                bird: [Some(&c1), None],
                exports: &exports1,
            },
            Speaker {
                host: "host2",
                running: true,
                bird: [Some(&c2), None],
                exports: &exports2,
            },
        ];
        let learned = BgpFabric::default().learned(&speakers);
        let via1 = IpAddr::V4(Ipv4Addr::new(172, 31, 250, 2));
        let via2 = IpAddr::V4(Ipv4Addr::new(172, 31, 250, 3));
        assert_eq!(
            learned["host2"],
            [(net("192.168.1.0/26"), via1)].into(),
            "one route for host1's block, none for the /32s inside it"
        );
        assert_eq!(
            learned["host1"],
            [
                (net("192.168.1.2/32"), via2),
                (net("192.168.1.64/26"), via2)
            ]
            .into(),
            "the borrowed /32 beats host1's own blackhole by prefix length"
        );
        assert_eq!(blackholes(&speakers[0]), [net("192.168.1.0/26")].into());
        let stopped = Speaker {
            running: false,
            ..speakers[0].clone()
        };
        assert!(blackholes(&stopped).is_empty());
    }

    #[test]
    fn one_sided_or_mismatched_as_peering_stays_down() {
        let (c1, c2) = (config(2, &[3], 64511), config(3, &[], 64511));
        let c3 = config(3, &[2], 65000);
        let exports = vec![net("192.168.1.2/32")];
        for other in [&c2, &c3] {
            let speakers = [
                Speaker {
                    host: "host1",
                    running: true,
                    bird: [Some(&c1), None],
                    exports: &[],
                },
                Speaker {
                    host: "host2",
                    running: true,
                    bird: [Some(other), None],
                    exports: &exports,
                },
            ];
            let fabric = BgpFabric::default();
            assert!(fabric.learned(&speakers)["host1"].is_empty());
            let row = &fabric.peer_table(&speakers, "host1")[0];
            assert_eq!(row.bird_state(), "start");
        }
    }
}
