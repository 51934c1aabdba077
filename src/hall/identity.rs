//! Caller identity from the kernel, mapped to the tenants the caller may act as.
//!
//! Threat model: the request body's `tenant_id` is a claim; the peer's uid/gid/pid come from
//! `SO_PEERCRED` (what the kernel recorded at `connect()`), which a caller cannot forge. A peer
//! may act only as the tenants `[identity]` maps to its uid or primary gid, so a forged
//! `tenant_id` is denied with `DENY_UNKNOWN_TENANT` by the router's signatory step. Operator
//! actions (resolving approvals, reload) need a listed operator uid or gid. Supplementary groups
//! are not consulted: the kernel does not report them with the credentials, and reading them
//! from `/proc/<pid>` later races with pid reuse.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::config::IdentitySection;
use crate::router::RouterConfig;

/// The kernel-verified identity of a connected peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// The peer's pid at connect time, when the kernel reports it.
    pub pid: Option<i32>,
}

/// `[identity]`, indexed.
#[derive(Debug, Clone, Default)]
pub struct IdentityMap {
    operator_uids: BTreeSet<u32>,
    operator_gids: BTreeSet<u32>,
    by_uid: HashMap<u32, BTreeSet<String>>,
    by_gid: HashMap<u32, BTreeSet<String>>,
}

impl IdentityMap {
    pub fn from_config(section: &IdentitySection) -> Self {
        let mut map = IdentityMap {
            operator_uids: section.operator_uids.iter().copied().collect(),
            operator_gids: section.operator_gids.iter().copied().collect(),
            ..Default::default()
        };
        for p in &section.peers {
            let slot = match (p.uid, p.gid) {
                (Some(uid), _) => map.by_uid.entry(uid).or_default(),
                (None, Some(gid)) => map.by_gid.entry(gid).or_default(),
                (None, None) => continue,
            };
            slot.extend(p.tenants.iter().cloned());
        }
        map
    }

    /// Every tenant the peer may act as.
    pub fn tenants_for(&self, peer: &Peer) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        out.extend(self.by_uid.get(&peer.uid).into_iter().flatten().cloned());
        out.extend(self.by_gid.get(&peer.gid).into_iter().flatten().cloned());
        out
    }

    /// Whether the peer may perform operator actions.
    pub fn is_operator(&self, peer: &Peer) -> bool {
        self.operator_uids.contains(&peer.uid) || self.operator_gids.contains(&peer.gid)
    }

    /// The router configuration for one peer: signatory checking always on, over the tenants
    /// both the configuration (when it requires signatories) and the peer mapping allow.
    pub fn router_config_for(&self, base: &RouterConfig, peer: &Peer) -> RouterConfig {
        let peer_tenants = self.tenants_for(peer);
        let allowed = if base.require_signatory {
            base.allowed_tenants
                .intersection(&peer_tenants)
                .cloned()
                .collect()
        } else {
            peer_tenants
        };
        RouterConfig {
            require_signatory: true,
            allowed_tenants: allowed,
            ..base.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PeerMapping;

    fn map() -> IdentityMap {
        IdentityMap::from_config(&IdentitySection {
            operator_uids: vec![0],
            operator_gids: vec![50],
            peers: vec![
                PeerMapping {
                    uid: Some(1000),
                    gid: None,
                    tenants: vec!["acme-corp".into()],
                },
                PeerMapping {
                    uid: None,
                    gid: Some(100),
                    tenants: vec!["mcp.my-app".into()],
                },
            ],
        })
    }

    #[test]
    fn tenants_are_the_union_of_uid_and_gid_mappings() {
        let m = map();
        let p = Peer {
            uid: 1000,
            gid: 100,
            pid: Some(1),
        };
        assert_eq!(
            m.tenants_for(&p),
            ["acme-corp", "mcp.my-app"].map(String::from).into()
        );
        assert!(
            m.tenants_for(&Peer {
                uid: 7,
                gid: 7,
                pid: None
            })
            .is_empty()
        );
        assert!(m.is_operator(&Peer {
            uid: 0,
            gid: 0,
            pid: None
        }));
        assert!(m.is_operator(&Peer {
            uid: 9,
            gid: 50,
            pid: None
        }));
        assert!(!m.is_operator(&p));
    }

    #[test]
    fn router_config_intersects_with_configured_signatories() {
        let m = map();
        let p = Peer {
            uid: 1000,
            gid: 100,
            pid: None,
        };
        let base = RouterConfig {
            require_signatory: true,
            allowed_tenants: ["acme-corp".to_owned()].into(),
            ..RouterConfig::default()
        };
        let c = m.router_config_for(&base, &p);
        assert!(c.require_signatory);
        assert_eq!(c.allowed_tenants, ["acme-corp".to_owned()].into());
        let open = m.router_config_for(&RouterConfig::default(), &p);
        assert_eq!(open.allowed_tenants.len(), 2);
        let stranger = m.router_config_for(
            &RouterConfig::default(),
            &Peer {
                uid: 5,
                gid: 5,
                pid: None,
            },
        );
        assert!(stranger.require_signatory && stranger.allowed_tenants.is_empty());
    }
}
