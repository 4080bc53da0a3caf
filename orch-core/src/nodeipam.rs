//! Node IPAM, as Kubernetes' node IPAM controller (`--allocate-node-cidrs` with the range
//! allocator): each node without a `spec.podCIDR` gets the lowest free subnet of the cluster
//! range (`--cluster-cidr`, `10.244.0.0/16` by default) of the node mask's size (`/24`), written
//! under the node's resourceVersion. A node that names its own keeps it (its subnet is taken).
//! When the range is full, the node waits, with a Warning event `CIDRNotAvailable`.
//!
//! Subnets proposed but not yet seen in the state are held as pending, so two rounds never
//! give one subnet twice; a pending allocation whose write did not apply is dropped (the next
//! round allocates again from the state).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::command::Command;
use crate::events::{EventType, Record};
use crate::object::{Kind, Object, ObjectKey};
use crate::reconcile::{Fate, Reconciler};
use crate::state::State;

/// The most allocations one round proposes.
pub const ALLOCATIONS_PER_ROUND_MAX: usize = 1_000;

/// An IPv4 CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cidr {
    /// The network address (host bits zero).
    pub base: u32,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` (host bits must be zero).
    ///
    /// # Errors
    /// Not an IPv4 CIDR, or host bits set.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = text.split_once('/').ok_or_else(|| format!("{text:?} is not a CIDR (a.b.c.d/n)"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("{text:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 =
            prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("{text:?}: the prefix must be 0 to 32"))?;
        let base = u32::from(addr);
        if base & !Self::mask(prefix) != 0 {
            return Err(format!("{text:?}: the address has bits set beyond the prefix"));
        }
        Ok(Self { base, prefix })
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) }
    }

    /// Whether `other` lies inside this one.
    pub fn contains(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && other.base & Self::mask(self.prefix) == self.base
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// The allocator's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The cluster's pod range.
    pub cluster_cidr: Cidr,
    /// The prefix length of each node's subnet (at least the range's, at most 30).
    pub node_mask: u8,
}

impl Default for Settings {
    /// `10.244.0.0/16` in `/24`s, as kubeadm's default with flannel.
    fn default() -> Self {
        Self { cluster_cidr: Cidr { base: u32::from(Ipv4Addr::new(10, 244, 0, 0)), prefix: 16 }, node_mask: 24 }
    }
}

impl Settings {
    /// Checks the settings.
    ///
    /// # Errors
    /// A node mask shorter than the range's prefix, longer than 30, or more than 2^20 subnets.
    pub fn check(&self) -> Result<(), String> {
        let (prefix, mask) = (self.cluster_cidr.prefix, self.node_mask);
        if mask < prefix || mask > 30 || mask - prefix > 20 {
            return Err(format!(
                "node CIDR mask size /{mask} must be between the cluster CIDR's /{prefix} and /30, and at most 20 bits longer"
            ));
        }
        Ok(())
    }

    fn subnets(&self) -> u32 {
        1u32 << (self.node_mask.saturating_sub(self.cluster_cidr.prefix).min(20))
    }

    fn subnet(&self, index: u32) -> Cidr {
        Cidr { base: self.cluster_cidr.base + (index << (32 - u32::from(self.node_mask))), prefix: self.node_mask }
    }

    /// The indexes of the subnets that `cidr` overlaps.
    fn overlapping(&self, cidr: &Cidr) -> std::ops::Range<u32> {
        let range = self.cluster_cidr;
        let shift = 32 - u32::from(self.node_mask);
        if cidr.prefix <= range.prefix {
            // As large as the range or larger: all of it, if it contains it.
            return if cidr.contains(&range) { 0..self.subnets() } else { 0..0 };
        }
        if !range.contains(cidr) {
            return 0..0;
        }
        let first = (cidr.base - range.base) >> shift;
        let count = if cidr.prefix >= self.node_mask { 1 } else { 1u32 << (self.node_mask - cidr.prefix) };
        first..(first + count).min(self.subnets())
    }

    #[cfg(test)]
    fn index(&self, cidr: &Cidr) -> Option<u32> {
        (cidr.prefix == self.node_mask && self.cluster_cidr.contains(cidr))
            .then(|| (cidr.base - self.cluster_cidr.base) >> (32 - u32::from(self.node_mask)))
    }
}

/// The node IPAM controller of one term.
#[derive(Debug)]
pub struct NodeIpam {
    settings: Settings,
    /// Subnets proposed, by node, until the state shows them or the write failed.
    pending: BTreeMap<String, u32>,
    more: bool,
    events: Vec<Record>,
    /// Nodes already told the range is full.
    warned: BTreeSet<String>,
}

impl NodeIpam {
    /// A controller with `settings` (checked by the caller).
    pub fn new(settings: Settings) -> Self {
        Self { settings, pending: BTreeMap::new(), more: false, events: Vec::new(), warned: BTreeSet::new() }
    }
}

impl Reconciler for NodeIpam {
    const NAME: &'static str = "node-ipam-controller";
    const KINDS: Option<&'static [Kind]> = Some(&[Kind::Node]);

    fn reconcile(
        &mut self,
        state: &State,
        _now_ms: i64,
        _full: bool,
        _changed: &[ObjectKey],
        outcomes: &[(Command, Fate)],
    ) -> Vec<Command> {
        for (command, fate) in outcomes {
            if let (Command::Update(Object::Node(n)), false) = (command, matches!(fate, Fate::Applied(_))) {
                self.pending.remove(n.metadata.name.as_str());
            }
        }
        // Nodes are few (at most thousands): each round looks at all of them.
        let nodes: Vec<&std::sync::Arc<crate::core_v1::Node>> =
            state.list(Kind::Node, None).filter_map(|o| if let Object::Node(n) = o { Some(n) } else { None }).collect();
        let mut taken: BTreeSet<u32> = BTreeSet::new();
        for n in &nodes {
            if let Some(cidr) = n.spec.pod_cidr.as_deref() {
                self.pending.remove(n.metadata.name.as_str());
                // Every subnet of the range the node's CIDR overlaps is taken, whatever its
                // size (a node that named a /23 of its own takes two /24s).
                if let Ok(c) = Cidr::parse(cidr) {
                    taken.extend(self.settings.overlapping(&c));
                }
            }
        }
        self.pending.retain(|name, _| nodes.iter().any(|n| n.metadata.name == name.as_str()));
        taken.extend(self.pending.values().copied());
        let mut commands = Vec::new();
        let mut next = 0u32;
        self.more = false;
        let waiting: Vec<_> = nodes
            .iter()
            .filter(|n| n.spec.pod_cidr.is_none() && !self.pending.contains_key(n.metadata.name.as_str()))
            .collect();
        for n in waiting {
            if commands.len() >= ALLOCATIONS_PER_ROUND_MAX {
                self.more = true;
                break;
            }
            while next < self.settings.subnets() && taken.contains(&next) {
                next += 1;
            }
            if next >= self.settings.subnets() {
                if self.warned.insert(n.metadata.name.to_string()) {
                    self.events.push(Record::about(
                        Self::NAME,
                        &Object::Node(std::sync::Arc::clone(n)),
                        EventType::Warning,
                        "CIDRNotAvailable",
                        format!("Node {} status is now: CIDRNotAvailable", n.metadata.name),
                    ));
                }
                continue;
            }
            taken.insert(next);
            self.pending.insert(n.metadata.name.to_string(), next);
            let mut node = crate::core_v1::Node::clone(n);
            node.spec.pod_cidr = Some(self.settings.subnet(next).to_string().into());
            commands.push(Command::Update(Object::from(node)));
        }
        commands
    }

    fn more(&self) -> bool {
        self.more
    }

    fn events(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::world::World;

    #[test]
    fn cidrs_parse_and_contain() {
        let c = Cidr::parse("10.244.0.0/16").expect("cidr");
        assert_eq!(c.to_string(), "10.244.0.0/16");
        assert!(c.contains(&Cidr::parse("10.244.7.0/24").expect("cidr")));
        assert!(!c.contains(&Cidr::parse("10.245.0.0/24").expect("cidr")));
        assert!(Cidr::parse("10.244.0.1/16").is_err());
        assert!(Cidr::parse("10.244.0.0").is_err());
        assert!(Cidr::parse("10.244.0.0/33").is_err());
        let s = Settings { cluster_cidr: c, node_mask: 24 };
        assert_eq!(s.subnet(3).to_string(), "10.244.3.0/24");
        assert_eq!(s.index(&Cidr::parse("10.244.3.0/24").expect("cidr")), Some(3));
        assert!(Settings { cluster_cidr: c, node_mask: 8 }.check().is_err());
        assert!(Settings { cluster_cidr: c, node_mask: 31 }.check().is_err());
    }

    #[test]
    fn nodes_get_the_lowest_free_subnets_once_each() {
        let mut w = World::with(
            "apiVersion: v1\nkind: Node\nmetadata: {name: a}\nspec: {podCIDR: 10.244.0.0/24}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: b}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: c}\n",
        );
        let mut ipam = NodeIpam::new(Settings::default());
        let first = ipam.reconcile(&w.state, 0, true, &[], &[]);
        assert_eq!(first.len(), 2);
        // Not yet applied: a second round gives nothing twice.
        assert!(ipam.reconcile(&w.state, 0, false, &[], &[]).is_empty());
        let (fates, _) = w.run(first);
        assert!(fates.iter().all(|(_, f)| matches!(f, Fate::Applied(Ok(_)))), "{fates:?}");
        let cidr = |w: &World, n: &str| match w.state.get(&ObjectKey::new(Kind::Node, "", n)) {
            Some(Object::Node(n)) => n.spec.pod_cidr.as_ref().map(ToString::to_string),
            _ => None,
        };
        assert_eq!(cidr(&w, "b").as_deref(), Some("10.244.1.0/24"));
        assert_eq!(cidr(&w, "c").as_deref(), Some("10.244.2.0/24"));
        assert!(ipam.reconcile(&w.state, 0, true, &[], &[]).is_empty());
    }

    #[test]
    fn a_node_cidr_of_another_size_takes_every_subnet_it_overlaps() {
        let w = World::with(
            "apiVersion: v1\nkind: Node\nmetadata: {name: a}\nspec: {podCIDR: 10.244.0.0/23}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: b}\nspec: {podCIDR: 10.244.2.128/25}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: c}\n",
        );
        let mut ipam = NodeIpam::new(Settings::default());
        let commands = ipam.reconcile(&w.state, 0, true, &[], &[]);
        let Some(Command::Update(Object::Node(n))) = commands.first() else { panic!("{commands:?}") };
        assert_eq!(n.spec.pod_cidr.as_deref(), Some("10.244.3.0/24"));
    }

    #[test]
    fn a_full_range_leaves_the_node_waiting_with_an_event() {
        let w = World::with(
            "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: b}\n",
        );
        let settings = Settings { cluster_cidr: Cidr::parse("10.9.0.0/24").expect("cidr"), node_mask: 24 };
        let mut ipam = NodeIpam::new(settings);
        let commands = ipam.reconcile(&w.state, 0, true, &[], &[]);
        assert_eq!(commands.len(), 1);
        let events = ipam.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "CIDRNotAvailable");
        // A write that did not apply frees its subnet for the next round.
        let fates: Vec<(Command, Fate)> = commands.into_iter().map(|c| (c, Fate::Unknown)).collect();
        assert_eq!(ipam.reconcile(&w.state, 0, false, &[], &fates).len(), 1);
    }
}
