//! Caller identity from the kernel, mapped to the tenants the caller may act as.
//!
//! Threat model: the request body's `tenant_id` is a claim; the peer's uid/gid/pid come from
//! `SO_PEERCRED` (what the kernel recorded at `connect()`), which a caller cannot forge. A peer
//! may act only as the tenants `[identity]` maps to its uid or to a group it belongs to, so a
//! forged `tenant_id` is denied with `DENY_UNKNOWN_TENANT` by the router's signatory step.
//! Operator actions (resolving approvals, reload) need a listed operator uid or gid.
//!
//! Groups: the primary gid comes with the kernel's credentials; supplementary membership comes
//! from the group database for the peer's uid (`getgrouplist` of its user name), as `id(1)`
//! shows it — what an administrator changes with `usermod -aG`. It is looked up only when
//! `[identity]` names gids, and cached per uid for [`GROUPS_TTL`]. (The kernel does not report
//! a peer's supplementary groups with its credentials, and reading them from `/proc/<pid>`
//! later races with pid reuse.) A uid without a passwd entry has its primary gid only.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// uid → (when looked up, its groups in the group database).
type GroupCache = Arc<Mutex<HashMap<u32, (Instant, Vec<u32>)>>>;

/// How long a uid's group membership from the group database is reused.
pub const GROUPS_TTL: Duration = Duration::from_secs(30);

/// `[identity]`, indexed.
#[derive(Debug, Clone, Default)]
pub struct IdentityMap {
    operator_uids: BTreeSet<u32>,
    operator_gids: BTreeSet<u32>,
    by_uid: HashMap<u32, BTreeSet<String>>,
    by_gid: HashMap<u32, BTreeSet<String>>,
    groups: GroupCache,
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

    /// The peer's groups: its primary gid and, when `[identity]` names any gid, its
    /// supplementary groups from the group database (cached per uid).
    pub fn groups_of(&self, peer: &Peer) -> Vec<u32> {
        let mut out = vec![peer.gid];
        if self.by_gid.is_empty() && self.operator_gids.is_empty() {
            return out;
        }
        let cached = self.groups.lock().ok().and_then(|c| {
            c.get(&peer.uid)
                .filter(|(at, _)| at.elapsed() < GROUPS_TTL)
                .map(|(_, g)| g.clone())
        });
        let groups = cached.unwrap_or_else(|| {
            let g = database_groups(peer.uid, peer.gid);
            if let Ok(mut c) = self.groups.lock() {
                if c.len() > 4096 {
                    c.clear();
                }
                c.insert(peer.uid, (Instant::now(), g.clone()));
            }
            g
        });
        out.extend(groups.into_iter().filter(|g| *g != peer.gid));
        out
    }

    /// Every tenant the peer may act as.
    pub fn tenants_for(&self, peer: &Peer) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        out.extend(self.by_uid.get(&peer.uid).into_iter().flatten().cloned());
        if !self.by_gid.is_empty() {
            for g in self.groups_of(peer) {
                out.extend(self.by_gid.get(&g).into_iter().flatten().cloned());
            }
        }
        out
    }

    /// Whether the peer may perform operator actions.
    pub fn is_operator(&self, peer: &Peer) -> bool {
        self.operator_uids.contains(&peer.uid)
            || (!self.operator_gids.is_empty()
                && self
                    .groups_of(peer)
                    .iter()
                    .any(|g| self.operator_gids.contains(g)))
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

/// The groups the group database gives `uid`'s user (primary `gid` included); `[gid]` when
/// the uid has no passwd entry.
fn database_groups(uid: u32, gid: u32) -> Vec<u32> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten();
    let Some(user) = user else {
        return vec![gid];
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return vec![gid];
    };
    // The passwd entry's primary group and every group that lists the user, as `id` shows.
    nix::unistd::getgrouplist(&name, user.gid)
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![gid])
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
    fn a_group_from_the_group_database_grants_its_tenants() {
        // root's passwd entry puts it in group 0 whatever primary gid the socket reports.
        let m = IdentityMap::from_config(&IdentitySection {
            operator_uids: vec![],
            operator_gids: vec![0],
            peers: vec![PeerMapping {
                uid: None,
                gid: Some(0),
                tenants: vec!["by-group".into()],
            }],
        });
        let p = Peer {
            uid: 0,
            gid: 4242,
            pid: None,
        };
        assert!(m.groups_of(&p).contains(&0), "{:?}", m.groups_of(&p));
        assert_eq!(m.tenants_for(&p), ["by-group".to_owned()].into());
        assert!(m.is_operator(&p));
        // A uid with no passwd entry has its kernel gid only.
        let ghost = Peer {
            uid: 3_999_999,
            gid: 4242,
            pid: None,
        };
        assert_eq!(m.groups_of(&ghost), vec![4242]);
        assert!(m.tenants_for(&ghost).is_empty());
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
